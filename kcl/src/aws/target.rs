//! [`StreamTarget`]: which stream a call names.

use std::fmt;

/// Which stream: by name, or by ARN (recommended by AWS for cross-account access).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StreamTarget {
    /// `StreamName`.
    Name(String),
    /// `StreamARN` (`arn:aws:kinesis:<region>:<account>:stream/<name>`).
    Arn(String),
}

impl StreamTarget {
    /// An ARN if `stream` starts with `arn:`, a name otherwise.
    ///
    /// ```
    /// use kinesis_kcl::shard::StreamTarget;
    ///
    /// assert_eq!(StreamTarget::parse("orders"), StreamTarget::Name("orders".into()));
    /// let arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/orders";
    /// assert_eq!(StreamTarget::parse(arn), StreamTarget::Arn(arn.into()));
    /// ```
    pub fn parse(stream: impl Into<String>) -> Self {
        let stream = stream.into();
        if stream.starts_with("arn:") {
            StreamTarget::Arn(stream)
        } else {
            StreamTarget::Name(stream)
        }
    }

    /// The stream name: the name itself, or the resource part of an ARN
    /// (`…:stream/<name>`), if it has one.
    ///
    /// ```
    /// use kinesis_kcl::shard::StreamTarget;
    ///
    /// let arn = StreamTarget::parse("arn:aws:kinesis:eu-west-1:123456789012:stream/orders");
    /// assert_eq!(arn.stream_name(), Some("orders"));
    /// assert_eq!(StreamTarget::parse("orders").stream_name(), Some("orders"));
    /// ```
    pub fn stream_name(&self) -> Option<&str> {
        match self {
            StreamTarget::Name(name) => Some(name),
            StreamTarget::Arn(arn) => arn
                .rsplit_once(":stream/")
                .map(|(_, name)| name)
                .filter(|name| !name.is_empty() && !name.contains('/')),
        }
    }

    /// The name or ARN.
    pub fn as_str(&self) -> &str {
        match self {
            StreamTarget::Name(s) | StreamTarget::Arn(s) => s,
        }
    }
}

impl fmt::Display for StreamTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for StreamTarget {
    fn from(stream: &str) -> Self {
        StreamTarget::parse(stream)
    }
}

impl From<String> for StreamTarget {
    fn from(stream: String) -> Self {
        StreamTarget::parse(stream)
    }
}
