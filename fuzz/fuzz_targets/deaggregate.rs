//! Any bytes through `kinesis_aggregation::deaggregate`, raw or framed with a correct MD5 (see
//! `kinesis_fuzz::deaggregate_case`): it never panics, and every invariant of
//! `kinesis_fuzz::check_deaggregate` holds (pass-through unchanged, reasons agree with the
//! framing, bounded sizes, re-aggregation round trip).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kinesis_fuzz::check_deaggregate(&kinesis_fuzz::deaggregate_case(data));
});
