//! Orcastra: an embedded, log-structured job queue.
//!
//! The heart of Orcastra is a durable, append-only log that lives inside your
//! process: no broker to run. This crate is built in layers, each in its own
//! module:
//!
//! - [`log`]: the [`Log`] trait and its backends: [`SegmentLog`] (memory-mapped
//!   segment files with checksums, crash recovery and group commit; the
//!   default), [`MemoryLog`] (tests, benchmarks) and [`TextLog`] (one record
//!   per line of a text file). [`log::storage`] is the file layer beneath
//!   them, with a simulated file system for crash tests.
//! - [`record`]: the Cap'n Proto message that the layers above the log store
//!   in each record: a stream entry's id, fields, time and headers.
//! - [`streams`]: Redis Streams and consumer groups, durable over any log:
//!   the [`Streams`](streams::Streams) trait and the embedded engine,
//!   [`Embedded`](streams::Embedded). (Internally `stream` holds one
//!   stream's logs and journal, `group` a consumer group's state.)
//!
//! - [`task`]: tasks, from `#[orca_task]` async functions: the [`Task`](task::Task)
//!   trait, task options and errors, and the envelope a task travels in.
//!
//! The workers and the Redis-protocol server are built on `Streams`.
//!
//! # Example
//!
//! ```
//! use orcastra::{FsyncPolicy, Log, LogOptions, Offset, SegmentLog};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let log = SegmentLog::open(dir.path(), LogOptions::default().fsync(FsyncPolicy::Batch))?;
//!
//! // Returns once both records are on disk; concurrent appenders share fsyncs.
//! let offsets = log.append(&["first job", "second job"]).await?;
//! assert_eq!(offsets, Offset(0)..Offset(2));
//!
//! // Reads share the log's memory map: no copy.
//! let records = log.read(Offset(0), 100)?;
//! assert_eq!(records[1], "second job");
//! # Ok(())
//! # }
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod group;
pub mod log;
mod orca;
pub mod record;
pub mod server;
pub mod statekeeper;
mod stream;
pub mod streams;
pub mod task;
mod timekeeper;
pub mod worker;

// Lets the code `#[orca_task]` generates (`::orcastra::…`) compile in here too.
extern crate self as orcastra;

pub use log::{
    FsyncPolicy, Log, LogError, LogOptions, MemoryLog, Offset, SegmentLog, TextLog, VerifyReport,
};
pub use orca::{
    DeadLetter, Error, MAX_PRIORITY, Orcastra, QueueInfo, SubmitOptions, TaskFailure, TaskHandle,
};
pub use record::{Record, StreamId};

/// What a program that defines and runs tasks needs, in one import.
pub mod prelude {
    pub use crate::statekeeper::State;
    pub use crate::task::{Task, TaskContext, TaskError, orca_task};
    pub use crate::{Orcastra, TaskHandle};
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
