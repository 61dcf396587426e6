//! The task envelope: a task as it travels through a queue, encoded as the
//! Cap'n Proto `Envelope` of `schema/task.capnp`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use super::Name;
use super::task_capnp::envelope;
use crate::record::layout::{Blob, MAX_LIST, Root, Segment, struct_pointer};
use crate::record::read_message;

/// The UUID namespace of unique tasks' ids.
const UNIQUE_NAMESPACE: Uuid = Uuid::from_u128(0x6f72_6361_7374_7261_8000_756e_6971_7565);

/// A task's id: a UUID v7, so ids sort by submission time (a unique task's
/// id is a UUID v5 derived from its key).
///
/// ```
/// use orcastra::task::TaskId;
///
/// let id = TaskId::new();
/// assert_eq!(id.to_string().parse::<TaskId>(), Ok(id));
/// assert!(TaskId::new() > id);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskId(Uuid);

/// The order of the bytes, compared as one number: the state keeper's
/// trees compare ids at every step of every lookup.
impl Ord for TaskId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_u128().cmp(&other.0.as_u128())
    }
}

impl PartialOrd for TaskId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl TaskId {
    /// A new id, greater than every id this process made before.
    #[allow(clippy::new_without_default)] // a default id would be a random one: say `new`
    pub fn new() -> Self {
        TaskId(Uuid::now_v7())
    }

    /// The id of generation `generation` of the unique task `key` of task
    /// `name`: a UUID v5 (a hash of the three), the same in every process.
    pub(crate) fn unique(name: &str, key: &str, generation: u64) -> Self {
        let name = format!("{name}\n{key}\n{generation}");
        TaskId(Uuid::new_v5(&UNIQUE_NAMESPACE, name.as_bytes()))
    }

    /// When the task was submitted (ms since the Unix epoch), which a
    /// UUID v7 says; `None` for a unique task's id.
    pub(crate) fn submitted_ms(&self) -> Option<u64> {
        let (seconds, nanos) = self.0.get_timestamp()?.to_unix();
        Some(seconds * 1000 + u64::from(nanos) / 1_000_000)
    }

    /// The id's 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Its text form (as `Display` writes it) in `buffer`, without
    /// allocating.
    pub(crate) fn encode(self, buffer: &mut [u8; uuid::fmt::Hyphenated::LENGTH]) -> &[u8] {
        self.0.hyphenated().encode_lower(buffer).as_bytes()
    }

    fn from_slice(bytes: &[u8]) -> Option<Self> {
        Uuid::from_slice(bytes).ok().map(TaskId)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for TaskId {
    type Err = EnvelopeError;

    fn from_str(text: &str) -> Result<Self, EnvelopeError> {
        Uuid::parse_str(text)
            .map(TaskId)
            .map_err(|e| EnvelopeError(format!("not a task id: {e}")))
    }
}

/// A task in a queue: which task, its arguments, and how it is to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The task's id.
    pub id: TaskId,
    /// The registered name of the task.
    pub name: Name,
    /// The queue it was submitted to.
    pub queue: Name,
    /// Its arguments: a JSON array (see [`encode_args`](super::encode_args)).
    pub args: Bytes,
    /// How many runs came before this one.
    pub attempt: u32,
    /// When it was submitted, in milliseconds since the Unix epoch.
    pub submitted_ms: u64,
    /// Not to run before this time (0: at once).
    pub not_before_ms: u64,
    /// Higher runs first.
    pub priority: u8,
    /// Submissions with the same key are one task while it is not finished.
    pub idempotency_key: Option<String>,
    /// The task that submitted this one.
    pub parent: Option<TaskId>,
    /// The workflow it belongs to.
    pub workflow: Option<TaskId>,
    /// Trace context (`traceparent`, `tracestate`) and other headers.
    pub trace: Vec<(String, String)>,
    /// Overrides the task's `retries` for this submission.
    pub max_retries: Option<u32>,
    /// Overrides the task's `timeout` for this submission.
    pub timeout: Option<Duration>,
}

/// Bytes that are not a task envelope.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a task envelope: {0}")]
pub struct EnvelopeError(String);

impl Envelope {
    /// A first run of task `name` with JSON `args`, submitted now.
    pub fn new(
        name: impl Into<Name>,
        queue: impl Into<Name>,
        args: impl Into<Bytes>,
        now_ms: u64,
    ) -> Self {
        Envelope {
            id: TaskId::new(),
            name: name.into(),
            queue: queue.into(),
            args: args.into(),
            attempt: 0,
            submitted_ms: now_ms,
            not_before_ms: 0,
            priority: 0,
            idempotency_key: None,
            parent: None,
            workflow: None,
            trace: Vec::new(),
            max_retries: None,
            timeout: None,
        }
    }

    /// The Cap'n Proto message.
    ///
    /// # Panics
    ///
    /// If a name, key, header or the arguments are 512 MiB or more, more
    /// than Cap'n Proto holds (submissions refuse such arguments).
    ///
    /// ```
    /// use orcastra::task::Envelope;
    ///
    /// let envelope = Envelope::new("resize", "images", &br#"["cat.png",200]"#[..], 1_700_000_000_000);
    /// assert_eq!(Envelope::decode(&envelope.encode())?, envelope);
    /// # Ok::<(), orcastra::task::EnvelopeError>(())
    /// ```
    pub fn encode(&self) -> Vec<u8> {
        let blobs = [
            (Blob::Data, &self.id.as_bytes()[..]),
            (Blob::Text, self.name.as_bytes()),
            (Blob::Text, self.queue.as_bytes()),
            (Blob::Data, &self.args),
            (
                Blob::Text,
                self.idempotency_key.as_deref().unwrap_or("").as_bytes(),
            ),
            (
                Blob::Data,
                self.parent.as_ref().map_or(&[][..], |id| id.as_bytes()),
            ),
            (
                Blob::Data,
                self.workflow.as_ref().map_or(&[][..], |id| id.as_bytes()),
            ),
        ];
        let headers = || self.trace.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
        let header_words: usize = headers()
            .map(|(n, v)| 2 + Blob::Text.words(n) + Blob::Text.words(v))
            .sum();
        let longest = blobs.iter().map(|(blob, bytes)| blob.count(bytes));
        let longest = headers()
            .flat_map(|(n, v)| [Blob::Text.count(n), Blob::Text.count(v)])
            .chain(longest)
            .chain([header_words])
            .max();
        assert!(
            longest < Some(MAX_LIST),
            "a task envelope's field has 512 MiB or more"
        );
        // The root pointer, the struct (5 data words, 8 pointers), its
        // blobs, the trace list's tag and headers.
        let blob_words: usize = blobs.iter().map(|(blob, bytes)| blob.words(bytes)).sum();
        let words = 1 + 5 + 8 + blob_words + 1 + header_words;
        let mut out = Vec::with_capacity(8 + 8 * words);
        let mut segment = Segment::append(&mut out, words);
        segment.put(0, struct_pointer(0, 5, 8));
        segment.put(
            1,
            u64::from(self.attempt) | (u64::from(self.priority) << 32),
        );
        segment.put(2, self.submitted_ms);
        segment.put(3, self.not_before_ms);
        // Stored XORed with its default, -1.
        let max_retries = self
            .max_retries
            .map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX));
        segment.put(4, u64::from((max_retries ^ -1) as u32));
        let timeout_ms = self.timeout.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        segment.put(5, timeout_ms);
        let mut next = 14;
        for (i, (blob, bytes)) in blobs.into_iter().enumerate() {
            next = segment.put_blob(6 + i, next, blob, bytes);
        }
        let end = segment.put_pairs(13, next, self.trace.len(), Blob::Text, headers());
        debug_assert_eq!(end, words);
        out
    }

    /// The envelope read straight from `bytes` (see [`Root`]), if it has the
    /// shape `encode` writes and no trace headers; otherwise Cap'n Proto
    /// decodes it. A worker decodes an envelope for every run, which took
    /// Cap'n Proto about 4000 instructions.
    /// Its name and queue are taken from `known` where it has them, its
    /// arguments made by `args` from their bytes.
    fn read_direct(
        bytes: &[u8],
        known: impl Fn(&str) -> Option<Name>,
        args: impl FnOnce(&[u8]) -> Bytes,
    ) -> Option<Envelope> {
        let mut root = Root::of(bytes)?;
        let data = [0, 1, 2, 3, 4].map(|i| root.data(i));
        let [
            Some(first),
            Some(submitted_ms),
            Some(not_before_ms),
            Some(retries),
            Some(timeout),
        ] = data
        else {
            return None;
        };
        root.empty_list(7)?;
        let optional_id = |bytes: &[u8]| match bytes {
            [] => Some(None),
            bytes => TaskId::from_slice(bytes).map(Some),
        };
        let id = TaskId::from_slice(root.blob(0, Blob::Data)?)?;
        let parent = optional_id(root.blob(5, Blob::Data)?)?;
        let workflow = optional_id(root.blob(6, Blob::Data)?)?;
        let args = args(root.blob(3, Blob::Data)?);
        let mut text = |i| std::str::from_utf8(root.blob(i, Blob::Text)?).ok();
        let (name, queue, key) = (text(1)?, text(2)?, text(4)?);
        let shared = |text: &str| known(text).unwrap_or_else(|| text.into());
        Some(Envelope {
            id,
            name: shared(name),
            queue: shared(queue),
            args,
            attempt: first as u32,
            submitted_ms,
            not_before_ms,
            priority: (first >> 32) as u8,
            idempotency_key: (!key.is_empty()).then(|| key.to_string()),
            parent,
            workflow,
            trace: Vec::new(),
            // Stored XORed with its default, -1.
            max_retries: u32::try_from(retries as u32 as i32 ^ -1).ok(),
            timeout: (timeout > 0).then(|| Duration::from_millis(timeout)),
        })
    }

    /// Decodes an envelope; any bytes give an envelope or an error, never a
    /// panic.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        match Self::read_direct(bytes, |_| None, Bytes::copy_from_slice) {
            Some(envelope) => Ok(envelope),
            None => Self::read_capnp(bytes),
        }
    }

    /// [`decode`](Self::decode) for a worker, which decodes an envelope for
    /// every run: the arguments are a view of `bytes`, and the name and
    /// queue are taken from `known` where it has them, rather than
    /// allocated each time.
    pub(crate) fn decode_sharing(
        bytes: &Bytes,
        known: impl Fn(&str) -> Option<Name>,
    ) -> Result<Envelope, EnvelopeError> {
        match Self::read_direct(bytes, known, |args| bytes.slice_ref(args)) {
            Some(envelope) => Ok(envelope),
            None => Self::read_capnp(bytes),
        }
    }

    /// Decodes an envelope through Cap'n Proto's reader, whatever its shape.
    fn read_capnp(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        let invalid = |e: capnp::Error| EnvelopeError(e.to_string());
        let envelope = read_message(bytes, |message| {
            let root = message.get_root::<envelope::Reader<'_>>()?;
            let text = |t: capnp::text::Reader<'_>| -> Result<String, capnp::Error> {
                Ok(t.to_str()?.to_string())
            };
            let optional_id = |bytes: &[u8]| match bytes {
                [] => Ok(None),
                bytes => TaskId::from_slice(bytes)
                    .map(Some)
                    .ok_or_else(|| capnp::Error::failed("a task id is not 16 bytes".into())),
            };
            let key = text(root.get_idempotency_key()?)?;
            Ok(Envelope {
                id: TaskId::from_slice(root.get_id()?)
                    .ok_or_else(|| capnp::Error::failed("a task id is not 16 bytes".into()))?,
                name: root.get_name()?.to_str()?.into(),
                queue: root.get_queue()?.to_str()?.into(),
                args: Bytes::copy_from_slice(root.get_args()?),
                attempt: root.get_attempt(),
                submitted_ms: root.get_submitted_ms(),
                not_before_ms: root.get_not_before_ms(),
                priority: root.get_priority(),
                idempotency_key: (!key.is_empty()).then_some(key),
                parent: optional_id(root.get_parent_id()?)?,
                workflow: optional_id(root.get_workflow_id()?)?,
                trace: root
                    .get_trace()?
                    .iter()
                    .map(|h| Ok((text(h.get_name()?)?, text(h.get_value()?)?)))
                    .collect::<Result<_, capnp::Error>>()?,
                max_retries: u32::try_from(root.get_max_retries()).ok(),
                timeout: match root.get_timeout_ms() {
                    0 => None,
                    ms => Some(Duration::from_millis(ms)),
                },
            })
        });
        envelope.map_err(|e| match e {
            crate::record::RecordError::Decode(e) => invalid(e),
            other => EnvelopeError(other.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::layout::single_damages;

    #[test]
    fn every_field_survives_encoding() {
        let envelope = Envelope {
            attempt: 3,
            not_before_ms: 99,
            priority: 7,
            idempotency_key: Some("order-17".into()),
            parent: Some(TaskId::new()),
            workflow: Some(TaskId::new()),
            trace: vec![("traceparent".into(), "00-abc-def-01".into())],
            max_retries: Some(0),
            timeout: Some(Duration::from_millis(1500)),
            ..Envelope::new("t", "q", &b"[]"[..], 5)
        };
        assert_eq!(Envelope::decode(&envelope.encode()), Ok(envelope));
    }

    /// The envelope as Cap'n Proto's builder lays it out.
    fn built_by_capnp(envelope: &Envelope) -> Vec<u8> {
        let mut message = crate::record::builder(1024);
        let mut root = message.init_root::<envelope::Builder<'_>>();
        root.set_id(envelope.id.as_bytes());
        root.set_name(&*envelope.name);
        root.set_queue(&*envelope.queue);
        root.set_args(&envelope.args);
        root.set_attempt(envelope.attempt);
        root.set_submitted_ms(envelope.submitted_ms);
        root.set_not_before_ms(envelope.not_before_ms);
        root.set_priority(envelope.priority);
        root.set_idempotency_key(envelope.idempotency_key.as_deref().unwrap_or(""));
        let id = |id: &Option<TaskId>| id.map_or(Vec::new(), |id| id.as_bytes().to_vec());
        root.set_parent_id(&id(&envelope.parent));
        root.set_workflow_id(&id(&envelope.workflow));
        let mut trace = root.reborrow().init_trace(envelope.trace.len() as u32);
        for (i, (name, value)) in envelope.trace.iter().enumerate() {
            let mut header = trace.reborrow().get(i as u32);
            header.set_name(name.as_str());
            header.set_value(value.as_str());
        }
        root.set_max_retries(envelope.max_retries.map_or(-1, |n| n as i32));
        root.set_timeout_ms(envelope.timeout.map_or(0, |t| t.as_millis() as u64));
        capnp::serialize::write_message_to_words(&message)
    }

    fn envelopes() -> impl proptest::strategy::Strategy<Value = Envelope> {
        use proptest::prelude::*;
        let id = || any::<u128>().prop_map(|n| TaskId(Uuid::from_u128(n)));
        let text = || ".{0,12}";
        (
            (
                id(),
                text(),
                text(),
                proptest::collection::vec(any::<u8>(), 0..40),
            ),
            (any::<u32>(), any::<u64>(), any::<u64>(), any::<u8>()),
            (
                proptest::option::of(".{1,12}"),
                proptest::option::of(id()),
                proptest::option::of(id()),
            ),
            (
                proptest::collection::vec((text(), text()), 0..4),
                proptest::option::of(0..1000u32),
                proptest::option::of(1..u64::from(u32::MAX)),
            ),
        )
            .prop_map(
                |(
                    (id, name, queue, args),
                    (attempt, submitted_ms, not_before_ms, priority),
                    (idempotency_key, parent, workflow),
                    (trace, max_retries, timeout_ms),
                )| Envelope {
                    id,
                    name: name.into(),
                    queue: queue.into(),
                    args: args.into(),
                    attempt,
                    submitted_ms,
                    not_before_ms,
                    priority,
                    idempotency_key,
                    parent,
                    workflow,
                    trace,
                    max_retries,
                    timeout: timeout_ms.map(Duration::from_millis),
                },
            )
    }

    proptest::proptest! {
        /// Ids sort as their bytes do, and so as their text and their
        /// submission times.
        #[test]
        fn ids_are_ordered_as_their_bytes(a in proptest::num::u128::ANY, b in proptest::num::u128::ANY) {
            let (a, b) = (TaskId(Uuid::from_u128(a)), TaskId(Uuid::from_u128(b)));
            proptest::prop_assert_eq!(a.cmp(&b), a.as_bytes().cmp(b.as_bytes()));
            proptest::prop_assert_eq!(a.cmp(&b), a.to_string().cmp(&b.to_string()));
        }

        #[test]
        fn envelopes_are_written_as_capnp_builds_them(envelope in envelopes()) {
            let encoded = envelope.encode();
            proptest::prop_assert_eq!(&encoded, &built_by_capnp(&envelope));
            proptest::prop_assert_eq!(Envelope::decode(&encoded), Ok(envelope));
        }

        /// Wherever an envelope is read straight from its bytes (always, for
        /// one as `encode` writes it, without trace headers), Cap'n Proto
        /// reads the same, whatever single damage the bytes took: any byte
        /// changed, any word zeroed, the message cut short.
        #[test]
        fn envelopes_read_directly_are_those_capnp_reads(
            envelope in envelopes(),
            bits in 1..=255u8,
        ) {
            let bytes = envelope.encode();
            let direct = Envelope::read_direct(&bytes, |_| None, Bytes::copy_from_slice);
            proptest::prop_assert_eq!(direct.is_some(), envelope.trace.is_empty());
            for damaged in single_damages(&bytes, bits) {
                if let Some(direct) = Envelope::read_direct(&damaged, |_| None, Bytes::copy_from_slice) {
                    proptest::prop_assert_eq!(Envelope::read_capnp(&damaged), Ok(direct), "{:?}", damaged);
                }
            }
        }
    }

    #[test]
    fn a_worker_s_envelope_shares_its_bytes_and_the_names_it_knows() {
        let bytes = Bytes::from(Envelope::new("send", "mail", &b"[1]"[..], 5).encode());
        let send = Name::from_static("send");
        let known = |text: &str| (text == "send").then(|| send.clone());
        let envelope = Envelope::decode_sharing(&bytes, known).unwrap();
        assert_eq!(envelope.name.as_ptr(), send.as_ptr(), "the very name given");
        assert_eq!(&*envelope.queue, "mail");
        // The arguments are a view of the bytes read.
        assert!(bytes.as_ptr_range().contains(&envelope.args.as_ptr()));
        assert_eq!(Envelope::decode(&bytes), Ok(envelope));
    }

    #[test]
    fn garbage_is_an_error() {
        for bytes in [&b""[..], b"not capnp at all", &[0u8; 8], &[0u8; 64]] {
            assert!(Envelope::decode(bytes).is_err());
        }
        let mut envelope = Envelope::new("t", "q", &b"[]"[..], 5).encode();
        envelope.truncate(envelope.len() - 8);
        assert!(Envelope::decode(&envelope).is_err());
    }
}
