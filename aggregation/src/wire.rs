//! The few protobuf wire-format primitives the aggregation schema needs.
//!
//! Hand-written so that encoding and decoding work on plain slices with no per-field overhead and
//! no intermediate message structs, and so that decoding follows the Java parser the KCL uses:
//! a field whose wire type is not the declared one is an unknown field (skipped), not an error.
//! The `prost` messages in the `proto` module are the reference these are tested against.

use std::ops::Range;

/// Wire type of a varint field.
pub(crate) const VARINT: u8 = 0;
/// Wire type of a 64-bit field.
const FIXED64: u8 = 1;
/// Wire type of a length-delimited field.
pub(crate) const LEN: u8 = 2;
/// Wire type of a group start.
const START_GROUP: u8 = 3;
/// Wire type of a group end.
const END_GROUP: u8 = 4;
/// Wire type of a 32-bit field.
const FIXED32: u8 = 5;

/// How deeply unknown groups may nest (protobuf's usual recursion limit).
const MAX_DEPTH: u32 = 100;

/// The one-byte keys (`field << 3 | wire type`) of the schema's fields.
pub(crate) mod tag {
    use super::{LEN, VARINT, key};

    /// `AggregatedRecord.partition_key_table` (field 1, string).
    pub(crate) const PARTITION_KEY_TABLE: u8 = key(1, LEN);
    /// `AggregatedRecord.explicit_hash_key_table` (field 2, string).
    pub(crate) const EXPLICIT_HASH_KEY_TABLE: u8 = key(2, LEN);
    /// `AggregatedRecord.records` (field 3, message).
    pub(crate) const RECORDS: u8 = key(3, LEN);
    /// `Record.partition_key_index` (field 1, uint64).
    pub(crate) const PARTITION_KEY_INDEX: u8 = key(1, VARINT);
    /// `Record.explicit_hash_key_index` (field 2, uint64).
    pub(crate) const EXPLICIT_HASH_KEY_INDEX: u8 = key(2, VARINT);
    /// `Record.data` (field 3, bytes).
    pub(crate) const DATA: u8 = key(3, LEN);
}

/// The one-byte key of a field numbered 1 to 15.
pub(crate) const fn key(field: u8, wire_type: u8) -> u8 {
    (field << 3) | wire_type
}

/// The encoded length of `value` as a varint (1 to 10 bytes).
pub(crate) fn varint_len(value: u64) -> usize {
    // 7 payload bits per byte; `| 1` makes 0 take one byte.
    (70 - (value | 1).leading_zeros() as usize) / 7
}

/// Appends `value` as a varint.
pub(crate) fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The input is not a well-formed protobuf message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// A cursor over the fields of one message, inside a larger buffer (positions are absolute).
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    /// A reader over the whole of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            end: buf.len(),
        }
    }

    /// A reader over the embedded message at `range` of the same buffer.
    pub(crate) fn nested(&self, range: Range<usize>) -> Self {
        Self {
            buf: self.buf,
            pos: range.start,
            end: range.end,
        }
    }

    /// True when every field has been read.
    pub(crate) fn is_done(&self) -> bool {
        self.pos >= self.end
    }

    /// Reads a varint (at most 10 bytes, the last of which may only carry bit 63).
    pub(crate) fn varint(&mut self) -> Result<u64, Malformed> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .filter(|_| self.pos < self.end)
                .ok_or(Malformed)?;
            self.pos += 1;
            if shift == 63 && byte > 1 {
                return Err(Malformed);
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(Malformed)
    }

    /// Reads a field key: its number (1 to 2^29 - 1) and wire type.
    pub(crate) fn key(&mut self) -> Result<(u32, u8), Malformed> {
        let key = u32::try_from(self.varint()?).map_err(|_| Malformed)?;
        let (field, wire_type) = (key >> 3, (key & 7) as u8);
        if field == 0 || wire_type > FIXED32 {
            return Err(Malformed);
        }
        Ok((field, wire_type))
    }

    /// Reads a length-delimited payload and returns where it is.
    pub(crate) fn len_delimited(&mut self) -> Result<Range<usize>, Malformed> {
        let len = self.varint()?;
        let len = usize::try_from(len).map_err(|_| Malformed)?;
        self.advance(len)
    }

    /// Skips the value of a field this schema does not know (or knows with another wire type).
    pub(crate) fn skip(&mut self, field: u32, wire_type: u8) -> Result<(), Malformed> {
        self.skip_at_depth(field, wire_type, 0)
    }

    fn skip_at_depth(&mut self, field: u32, wire_type: u8, depth: u32) -> Result<(), Malformed> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.advance(8).map(drop),
            LEN => self.len_delimited().map(drop),
            FIXED32 => self.advance(4).map(drop),
            START_GROUP if depth < MAX_DEPTH => loop {
                match self.key()? {
                    (inner, END_GROUP) if inner == field => return Ok(()),
                    (_, END_GROUP) => return Err(Malformed),
                    (inner, inner_type) => self.skip_at_depth(inner, inner_type, depth + 1)?,
                }
            },
            _ => Err(Malformed),
        }
    }

    fn advance(&mut self, len: usize) -> Result<Range<usize>, Malformed> {
        let start = self.pos;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= self.end)
            .ok_or(Malformed)?;
        self.pos = end;
        Ok(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_match_prost(value: u64) {
            let mut ours = Vec::new();
            put_varint(value, &mut ours);
            let mut theirs = Vec::new();
            prost::encoding::encode_varint(value, &mut theirs);
            prop_assert_eq!(&ours, &theirs);
            prop_assert_eq!(varint_len(value), theirs.len());
            prop_assert_eq!(Reader::new(&ours).varint(), Ok(value));
        }

        #[test]
        fn varint_reading_agrees_with_prost(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let ours = Reader::new(&bytes).varint().ok();
            let theirs = prost::encoding::decode_varint(&mut &bytes[..]).ok();
            prop_assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn varint_lengths_at_boundaries() {
        for (value, len) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(value), len, "{value}");
        }
    }

    #[test]
    fn nested_readers_stop_at_their_end() {
        // A 2-byte message `08 01` followed by bytes that belong to someone else.
        let buf = [0x08, 0x01, 0x08];
        let mut inner = Reader::new(&buf).nested(0..2);
        assert_eq!(inner.key(), Ok((1, VARINT)));
        assert_eq!(inner.varint(), Ok(1));
        assert!(inner.is_done());
        assert_eq!(inner.key(), Err(Malformed));
    }

    #[test]
    fn skips_unknown_fields_of_every_wire_type() {
        let buf = [
            0x08, 0x96, 0x01, // 1: varint 150
            0x11, 1, 2, 3, 4, 5, 6, 7, 8, // 2: fixed64
            0x1a, 0x02, 0xaa, 0xbb, // 3: 2 bytes
            0x23, 0x08, 0x01, 0x24, // 4: group holding field 1 = 1, then its end
            0x2d, 1, 2, 3, 4, // 5: fixed32
        ];
        let mut reader = Reader::new(&buf);
        while !reader.is_done() {
            let (field, wire_type) = reader.key().unwrap();
            reader.skip(field, wire_type).unwrap();
        }
        // A group closed by another field's end, an end without start, wire types 6 and 7.
        for bad in [&[0x23, 0x2c][..], &[0x24], &[0x0e], &[0x0f], &[0x00]] {
            let mut reader = Reader::new(bad);
            let result = reader.key().and_then(|(f, w)| reader.skip(f, w));
            assert_eq!(result, Err(Malformed), "{bad:02x?}");
        }
    }

    #[test]
    fn deeply_nested_groups_are_refused_not_overflowed() {
        let mut buf = vec![0x0b; 10_000]; // field 1, start group, again and again
        buf.extend(vec![0x0c; 10_000]);
        let mut reader = Reader::new(&buf);
        let (field, wire_type) = reader.key().unwrap();
        assert_eq!(reader.skip(field, wire_type), Err(Malformed));
    }
}
