//! End-to-end scenarios of `kinesis-kpl` and `kinesis-kcl` together on the `kinesis-integration`
//! test bed; everything is in `tests/`.
