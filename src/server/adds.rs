//! Plain XADDs (`XADD key * field value …`) from every client, written
//! together: those that arrive while the previous ones are being written
//! become one append per stream, so the log sees one write, and under an
//! fsync policy that waits one fsync, for many clients at once. Each client
//! still gets the ids its own XADDs would have got alone.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::StreamId;
use crate::streams::{Embedded, Fields, LogStore, StreamError, Streams};

/// The most requests combined into one round.
const MAX_BATCH: usize = 4096;

type Outcome = Result<Vec<StreamId>, Arc<StreamError>>;

type Reply = oneshot::Sender<Outcome>;

struct Request {
    stream: String,
    entries: Vec<Fields>,
    reply: Reply,
}

/// The sending side; the combining task ends when it is dropped.
pub(super) struct Adds {
    requests: mpsc::UnboundedSender<Request>,
}

impl Adds {
    /// Starts the combining task for `streams`.
    pub(super) fn start<S: LogStore>(streams: Arc<Embedded<S>>) -> Adds {
        let (requests, receiver) = mpsc::unbounded_channel();
        tokio::spawn(combine(streams, receiver));
        Adds { requests }
    }

    /// Adds `entries` to `stream` as consecutive XADDs with `*` would, in
    /// the next round; returns their ids once durable.
    pub(super) async fn add(
        &self,
        stream: String,
        entries: Vec<Fields>,
    ) -> Result<Vec<StreamId>, StreamError> {
        let (reply, outcome) = oneshot::channel();
        let _ = self.requests.send(Request {
            stream,
            entries,
            reply,
        });
        match outcome.await {
            Ok(Ok(ids)) => Ok(ids),
            Ok(Err(error)) => Err(StreamError::Batch(error)),
            Err(_) => Err(StreamError::Reply("ERR the server is shutting down".into())),
        }
    }
}

async fn combine<S: LogStore>(
    streams: Arc<Embedded<S>>,
    mut receiver: mpsc::UnboundedReceiver<Request>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut by_stream: HashMap<String, Vec<(Vec<Fields>, Reply)>> = HashMap::new();
        for Request {
            stream,
            entries,
            reply,
        } in batch.drain(..)
        {
            by_stream.entry(stream).or_default().push((entries, reply));
        }
        // Not awaited here: the next round is appended while this one waits
        // for its fsync, so the next fsync can start the moment this one ends.
        for (stream, requests) in by_stream {
            tokio::spawn(add_together(Arc::clone(&streams), stream, requests));
        }
    }
}

/// One append for every request to `stream`, in the order they came.
async fn add_together<S: LogStore>(
    streams: Arc<Embedded<S>>,
    stream: String,
    requests: Vec<(Vec<Fields>, Reply)>,
) {
    let mut entries = Vec::new();
    let mut replies = Vec::with_capacity(requests.len());
    for (request, reply) in requests {
        replies.push((request.len(), reply));
        entries.extend(request);
    }
    match streams.add_batch(&stream, entries).await {
        Ok(ids) => {
            let mut ids = ids.into_iter();
            for (count, reply) in replies {
                let _ = reply.send(Ok(ids.by_ref().take(count).collect()));
            }
        }
        Err(error) => {
            let error = Arc::new(error);
            for (_, reply) in replies {
                let _ = reply.send(Err(Arc::clone(&error)));
            }
        }
    }
}
