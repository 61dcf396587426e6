use crate::log::LogError;

/// What can go wrong in a stream or group operation.
///
/// The messages are the error replies Redis 7 gives for the same mistake, so
/// that a server speaking the Redis protocol can send them as they are. An
/// operation that fails changes nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// XADD with an id not greater than the stream's last id.
    #[error("ERR The ID specified in XADD is equal or smaller than the target stream top item")]
    IdNotGreater,
    /// XADD with the id `0-0`.
    #[error("ERR The ID specified in XADD must be greater than 0-0")]
    ZeroId,
    /// XADD on a stream whose last id is the largest possible one.
    #[error("ERR The stream has exhausted the last possible ID, unable to add more items")]
    IdsExhausted,
    /// XSETID with an id smaller than the stream's last entry.
    #[error("ERR The ID specified in XSETID is smaller than the target stream top item")]
    SetIdTooSmall,
    /// XSETID with an entries-added count smaller than the stream's length.
    #[error("ERR The entries_added specified in XSETID is smaller than the target stream length")]
    EntriesAddedTooSmall,
    /// XSETID with a max-deleted id greater than the new last id.
    #[error("ERR The ID specified in XSETID is smaller than the provided max_deleted_entry_id")]
    MaxDeletedTooLarge,
    /// The stream does not exist (XINFO, XSETID).
    #[error("ERR no such key")]
    NoSuchKey,
    /// An XGROUP subcommand on a stream that does not exist.
    #[error(
        "ERR The XGROUP subcommand requires the key to exist. Note that for CREATE you may \
         want to use the MKSTREAM option to create an empty stream automatically."
    )]
    GroupNeedsStream,
    /// XGROUP CREATE of a group that exists.
    #[error("BUSYGROUP Consumer Group name already exists")]
    BusyGroup,
    /// XREADGROUP, XPENDING, XCLAIM or XAUTOCLAIM on a missing stream or group.
    #[error("NOGROUP No such key '{stream}' or consumer group '{group}'{suffix}")]
    NoGroup {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
        /// What Redis appends for XREADGROUP: ` in XREADGROUP with GROUP option`.
        suffix: &'static str,
    },
    /// A blocked XREADGROUP whose group was destroyed while it waited.
    #[error("NOGROUP the consumer group this client was blocked on no longer exists")]
    GroupGoneWhileBlocked,
    /// A blocked XREADGROUP whose stream was deleted while it waited.
    #[error("UNBLOCKED the stream key no longer exists")]
    StreamGoneWhileBlocked,
    /// An XGROUP subcommand or XINFO CONSUMERS on a missing group.
    #[error("NOGROUP No such consumer group '{group}' for key name '{stream}'")]
    NoSuchGroup {
        /// The stream.
        stream: String,
        /// The group.
        group: String,
    },
    /// COUNT of zero where Redis refuses it (XAUTOCLAIM).
    #[error("ERR COUNT must be > 0")]
    CountNotPositive,
    /// The key holds a Redis value that is not a stream.
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    /// The Redis server could not be reached, or the connection to it broke.
    /// The operation may or may not have taken effect.
    #[error("ERR Redis server at {server}: {reason}")]
    Unavailable {
        /// The address tried (`host:port`, without credentials).
        server: String,
        /// What went wrong.
        reason: String,
    },
    /// An error reply from a Redis server that no other variant stands for,
    /// as it came.
    #[error("{0}")]
    Reply(String),
    /// A reply without the shape the command has: the server is probably
    /// not Redis, or too old (Orcastra needs Redis 7).
    #[error("ERR unexpected reply from {server} to {command}: {reply}")]
    UnexpectedReply {
        /// The address of the server.
        server: String,
        /// The command sent.
        command: &'static str,
        /// The reply, abridged.
        reply: String,
    },
    /// A write combined with others into one batch failed; every write of
    /// the batch gets this error.
    #[error(transparent)]
    Batch(std::sync::Arc<StreamError>),
    /// The stream's storage failed.
    #[error("ERR {0}")]
    Log(#[from] LogError),
    /// A stored record or journal event could not be decoded.
    #[error("ERR corrupt stream data in {what}: {reason}")]
    Corrupt {
        /// Which stream's data.
        what: String,
        /// Why it could not be read.
        reason: String,
    },
}
