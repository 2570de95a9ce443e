//! How retrieval records its metrics: every metric of a shard reader is labelled `stream` and
//! `shard_id`. The names, kinds and units are in the crate's one list, [`crate::metrics`].

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// The labels of one shard's metrics.
#[derive(Clone, Debug)]
pub(crate) struct ShardLabels {
    pub(crate) stream: String,
    pub(crate) shard_id: String,
}

impl ShardLabels {
    pub(crate) fn new(stream: &str, shard_id: &str) -> Self {
        ShardLabels {
            stream: stream.to_owned(),
            shard_id: shard_id.to_owned(),
        }
    }

    pub(crate) fn counter(&self, name: &'static str) -> Counter {
        counter!(name, "stream" => self.stream.clone(), "shard_id" => self.shard_id.clone())
    }

    pub(crate) fn counter_with(
        &self,
        name: &'static str,
        label: &'static str,
        value: &'static str,
    ) -> Counter {
        counter!(name, "stream" => self.stream.clone(), "shard_id" => self.shard_id.clone(), label => value)
    }

    pub(crate) fn gauge(&self, name: &'static str) -> Gauge {
        gauge!(name, "stream" => self.stream.clone(), "shard_id" => self.shard_id.clone())
    }

    pub(crate) fn histogram_with(
        &self,
        name: &'static str,
        label: &'static str,
        value: &'static str,
    ) -> Histogram {
        histogram!(name, "stream" => self.stream.clone(), "shard_id" => self.shard_id.clone(), label => value)
    }
}
