//! The stream's open shards and their hash-key ranges: predicts the shard of a hash key, and
//! knows the range of every shard it has seen (open or closed), to check where a record landed.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_kinesis::types::{ShardFilter, ShardFilterType};
use kinesis_aggregation::HashKeyRange;

use crate::Error;
use crate::error::{CONSTRUCTION_FAILURE, causes, sdk_code_and_message};
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

/// A stream addressed by name or by ARN (`arn:…`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StreamId {
    Name(String),
    Arn(String),
}

impl StreamId {
    pub(crate) fn parse(stream: String) -> Self {
        if stream.starts_with("arn:") {
            Self::Arn(stream)
        } else {
            Self::Name(stream)
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            Self::Name(s) | Self::Arn(s) => s,
        }
    }
}

/// One open shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShardRange {
    pub(crate) id: Arc<str>,
    pub(crate) range: HashKeyRange,
}

/// Which shards a listing asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The open shards (`AT_LATEST`): what predictions need.
    Open,
    /// Every shard the stream still lists, closed ones too: to learn the range of a shard a
    /// record landed on that has closed since.
    All,
}

/// The open shards, sorted by starting hash key, and the range of every shard seen so far (a
/// shard's range never changes). Two maps are equal when their open shards are.
#[derive(Clone, Debug, Default)]
pub(crate) struct ShardMap {
    shards: Vec<ShardRange>,
    known: HashMap<Arc<str>, HashKeyRange>,
}

impl PartialEq for ShardMap {
    fn eq(&self, other: &Self) -> bool {
        self.shards == other.shards
    }
}

impl Eq for ShardMap {}

impl ShardMap {
    pub(crate) fn new(mut shards: Vec<ShardRange>) -> Self {
        shards.sort_by_key(|s| s.range.start());
        let known = shards.iter().map(|s| (s.id.clone(), s.range)).collect();
        Self { shards, known }
    }

    /// The hash-key range of shard `id`, open or closed, if it was ever listed.
    pub(crate) fn range_of(&self, id: &str) -> Option<HashKeyRange> {
        self.known.get(id).copied()
    }

    /// Keeps the ranges `older` knew that this map does not (closed shards).
    pub(crate) fn remember(&mut self, older: &ShardMap) {
        for (id, range) in &older.known {
            self.known.entry(id.clone()).or_insert(*range);
        }
    }

    /// The open shard whose range holds `hash_key`, if the map covers it.
    pub(crate) fn predict(&self, hash_key: u128) -> Option<&ShardRange> {
        let after = self.shards.partition_point(|s| s.range.start() <= hash_key);
        let shard = self.shards.get(after.checked_sub(1)?)?;
        shard.range.contains(hash_key).then_some(shard)
    }

    /// Whether `id` is one of the open shards.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.shards.iter().any(|s| &*s.id == id)
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.len()
    }

    /// Lists the stream's shards (every page) and keeps the open ones for predictions. With
    /// [`Scope::Open`] asks for open shards only (`AT_LATEST`) but also filters on the client,
    /// for servers that ignore the filter; with [`Scope::All`] also learns closed shards' ranges.
    pub(crate) async fn fetch(
        client: &aws_sdk_kinesis::Client,
        stream: &StreamId,
        scope: Scope,
    ) -> Result<Self, Error> {
        let mut shards = Vec::new();
        let mut closed = Vec::new();
        let mut next_token: Option<String> = None;
        let mut pages = 0usize;
        loop {
            let request = client.list_shards();
            let request = match &next_token {
                // With a token, the API forbids the stream and the filter.
                Some(token) => request.next_token(token),
                None => {
                    let request = if scope == Scope::Open {
                        let filter = ShardFilter::builder()
                            .r#type(ShardFilterType::AtLatest)
                            .build()
                            .map_err(|e| filter_error(stream, e))?;
                        request.shard_filter(filter)
                    } else {
                        request
                    };
                    // A stream given by ARN is listed with `StreamARN` and the name taken from
                    // the ARN, as the Java KCL lists it (Kinesis accepts both together; some
                    // servers, ferrokinesis among them, read only the name).
                    match stream {
                        StreamId::Name(name) => request.stream_name(name),
                        StreamId::Arn(arn) => match arn.rsplit_once(":stream/") {
                            Some((_, name)) if !name.is_empty() => {
                                request.stream_arn(arn).stream_name(name)
                            }
                            _ => request.stream_arn(arn),
                        },
                    }
                }
            };
            let page = request.send().await.map_err(|e| list_error(stream, e))?;
            for shard in page.shards() {
                let open = shard
                    .sequence_number_range()
                    .is_none_or(|r| r.ending_sequence_number().is_none());
                let Some(range) = shard.hash_key_range() else {
                    continue;
                };
                let range =
                    match HashKeyRange::parse(range.starting_hash_key(), range.ending_hash_key()) {
                        Ok(range) => range,
                        Err(error) => {
                            tracing::warn!(
                                shard = shard.shard_id(),
                                %error,
                                "shard with an unparsable hash-key range ignored"
                            );
                            continue;
                        }
                    };
                let range = ShardRange {
                    id: Arc::from(shard.shard_id()),
                    range,
                };
                if open {
                    shards.push(range);
                } else {
                    closed.push(range);
                }
            }
            pages += 1;
            match page.next_token() {
                // A server that ignores paging could hand the same token back forever.
                Some(token) if !page.shards().is_empty() && pages < 10_000 => {
                    next_token = Some(token.to_owned())
                }
                _ => break,
            }
        }
        if shards.is_empty() {
            return Err(Error::NoOpenShards {
                stream: stream.as_str().to_owned(),
            });
        }
        let mut map = Self::new(shards);
        for shard in closed {
            map.known.insert(shard.id, shard.range);
        }
        Ok(map)
    }
}

fn list_error<E, R>(stream: &StreamId, error: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let (code, message) = sdk_code_and_message(&error);
    Error::ListShards {
        stream: stream.as_str().to_owned(),
        code: code.to_owned(),
        message,
        source: Arc::new(error),
    }
}

/// The shard filter could not be built (a request never sent).
fn filter_error(stream: &StreamId, error: aws_sdk_kinesis::error::BuildError) -> Error {
    Error::ListShards {
        stream: stream.as_str().to_owned(),
        code: CONSTRUCTION_FAILURE.to_owned(),
        message: causes(&error),
        source: Arc::new(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, start: u128, end: u128) -> ShardRange {
        ShardRange {
            id: Arc::from(id),
            range: HashKeyRange::new(start, end).unwrap(),
        }
    }

    #[test]
    fn predicts_by_range_including_both_ends() {
        let half = u128::MAX / 2;
        let map = ShardMap::new(vec![shard("b", half + 1, u128::MAX), shard("a", 0, half)]);
        assert_eq!(map.predict(0).map(|s| &*s.id), Some("a"));
        assert_eq!(map.predict(half).map(|s| &*s.id), Some("a"));
        assert_eq!(map.predict(half + 1).map(|s| &*s.id), Some("b"));
        assert_eq!(map.predict(u128::MAX).map(|s| &*s.id), Some("b"));
    }

    #[test]
    fn a_gap_predicts_nothing() {
        let map = ShardMap::new(vec![shard("a", 0, 9), shard("b", 20, 29)]);
        assert!(map.predict(15).is_none());
        assert!(map.predict(30).is_none());
        assert_eq!(map.predict(25).map(|s| &*s.id), Some("b"));
        assert!(ShardMap::default().predict(1).is_none());
    }

    #[test]
    fn remembers_the_ranges_of_shards_no_longer_open() {
        let parent = ShardMap::new(vec![shard("p", 0, 99)]);
        let mut children = ShardMap::new(vec![shard("c1", 0, 49), shard("c2", 50, 99)]);
        assert_eq!(children.range_of("p"), None);
        children.remember(&parent);
        assert_eq!(children.range_of("p"), HashKeyRange::new(0, 99).ok());
        assert_eq!(children.range_of("c2"), HashKeyRange::new(50, 99).ok());
        assert!(
            !children.contains("p"),
            "a remembered shard is not predicted"
        );
        assert_ne!(children, parent);
    }
}
