//! The shards of a stream as the operations need them: lineage, range, open or closed.

use kinesis_kcl::lease::HashKeyRange;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A shard as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Its id.
    pub shard_id: String,
    /// Its parents.
    pub parents: Vec<String>,
    /// Its hash-key range.
    pub range: Option<HashKeyRange>,
    /// Whether it is closed.
    pub closed: bool,
}

/// Every shard of the stream, closed ones too.
pub async fn list_shards(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<Shard>, BoxError> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let request = match &token {
            Some(token) => kinesis.list_shards().next_token(token),
            None => kinesis.list_shards().stream_name(stream),
        };
        let page = request.send().await?;
        for s in page.shards() {
            shards.push(Shard {
                shard_id: s.shard_id().to_owned(),
                parents: [s.parent_shard_id(), s.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .map(str::to_owned)
                    .collect(),
                range: s.hash_key_range().and_then(|r| {
                    HashKeyRange::parse(r.starting_hash_key(), r.ending_hash_key()).ok()
                }),
                closed: s
                    .sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_some()),
            });
        }
        match page.next_token() {
            Some(next) if !page.shards().is_empty() => token = Some(next.to_owned()),
            _ => break,
        }
    }
    Ok(shards)
}
