//! `kinesis-ops decode`: the user records inside a Kinesis record's data, as JSON lines.
//!
//! The data is split with [`kinesis_aggregation::deaggregate`], the same code the consumer uses,
//! so what this prints is what a processor would be handed. Each user record of an aggregate
//! becomes one line:
//!
//! ```json
//! {"record":0,"aggregated":true,"sub_sequence_number":0,"partition_key":"user-1","explicit_hash_key":null,"encoding":"utf-8","data":"clicked"}
//! ```
//!
//! Data that is not an aggregate becomes one line with `"aggregated": false`, the reason it was
//! passed through (`no_magic` for a plain record; anything else means it carried the KPL magic
//! but could not be read, `malformed_aggregate: true`), and the data as given.
//!
//! Data is printed as text when it is valid UTF-8 (`"encoding": "utf-8"`), otherwise as
//! standard base64 (`"encoding": "base64"`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use kinesis_aggregation::{Deaggregated, deaggregate};
use serde_json::{Map, Value, json};

/// The data of a record as JSON fields: `encoding` and `data`.
fn data_fields(data: &[u8], fields: &mut Map<String, Value>) {
    let (encoding, text) = match std::str::from_utf8(data) {
        Ok(text) => ("utf-8", text.to_owned()),
        Err(_) => ("base64", STANDARD.encode(data)),
    };
    fields.insert("encoding".to_owned(), json!(encoding));
    fields.insert("data".to_owned(), json!(text));
}

/// Decodes one Kinesis record's data (`record` numbers it in the output): one JSON object per
/// user record of an aggregate (none for an empty aggregate), or one object marked
/// `"aggregated": false` for data passed through.
pub fn decode_record(data: Bytes, record: usize) -> Vec<Value> {
    match deaggregate(data) {
        Deaggregated::Aggregated(records) => records
            .iter()
            .map(|sub| {
                let mut fields = Map::new();
                fields.insert("record".to_owned(), json!(record));
                fields.insert("aggregated".to_owned(), json!(true));
                fields.insert(
                    "sub_sequence_number".to_owned(),
                    json!(sub.sub_sequence_number()),
                );
                fields.insert("partition_key".to_owned(), json!(sub.partition_key()));
                fields.insert(
                    "explicit_hash_key".to_owned(),
                    json!(sub.explicit_hash_key()),
                );
                data_fields(sub.data(), &mut fields);
                Value::Object(fields)
            })
            .collect(),
        Deaggregated::PassThrough { data, reason } => {
            let mut fields = Map::new();
            fields.insert("record".to_owned(), json!(record));
            fields.insert("aggregated".to_owned(), json!(false));
            fields.insert("reason".to_owned(), json!(reason.as_str()));
            fields.insert("detail".to_owned(), json!(reason.to_string()));
            fields.insert(
                "malformed_aggregate".to_owned(),
                json!(reason.is_malformed_aggregate()),
            );
            data_fields(&data, &mut fields);
            vec![Value::Object(fields)]
        }
    }
}

/// Decodes base64 input into records: each non-empty line is one record's data (as
/// `aws kinesis get-records ... | jq -r '.Records[].Data'` prints them). Whitespace around a
/// line is ignored; padding is optional.
///
/// # Errors
///
/// A message naming the line that is not base64.
pub fn records_from_base64(text: &str) -> Result<Vec<Bytes>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| decode_base64(line.trim()).map_err(|e| format!("line {}: {e}", n + 1)))
        .collect()
}

/// Decodes one base64 string (standard alphabet, padding optional).
///
/// # Errors
///
/// A message when it is not base64.
pub fn decode_base64(text: &str) -> Result<Bytes, String> {
    let trimmed = text.trim().trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .map(Bytes::from)
        .map_err(|e| format!("not base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_data_is_base64_and_text_is_text() {
        let lines = decode_record(Bytes::from_static(&[0xff, 0x00, 0x01]), 3);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["record"], 3);
        assert_eq!(lines[0]["aggregated"], false);
        assert_eq!(lines[0]["reason"], "no_magic");
        assert_eq!(lines[0]["encoding"], "base64");
        assert_eq!(lines[0]["data"], "/wAB");
        let lines = decode_record(Bytes::from_static(b"hello"), 0);
        assert_eq!(lines[0]["encoding"], "utf-8");
        assert_eq!(lines[0]["data"], "hello");
    }

    #[test]
    fn base64_lines_with_and_without_padding() {
        let records = records_from_base64("aGVsbG8=\n\n  d29ybGQ  \naGk\n").unwrap();
        assert_eq!(records, [&b"hello"[..], b"world", b"hi"]);
        let error = records_from_base64("aGVsbG8=\n!!!\n").unwrap_err();
        assert!(error.starts_with("line 2:"), "{error}");
    }
}
