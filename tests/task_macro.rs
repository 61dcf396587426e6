//! `#[orca_task]`: what it derives from a function, and the compile errors
//! it gives for signatures a task cannot have (`tests/ui/`, with trybuild).

use std::time::Duration;

use orcastra::task::{
    Backoff, Retry, Task, TaskContext, TaskError, TaskId, TaskOptions, decode_args, encode_args,
    orca_task,
};
use tokio_util::sync::CancellationToken;

#[orca_task(
    name = "crawl.fetch",
    queue = "crawl",
    retries = 5,
    backoff = "250ms",
    timeout = "30s",
    priority = 2,
    max_deliveries = 3
)]
async fn fetch_page(url: String, depth: i32) -> Result<String, String> {
    if depth < 0 {
        return Err(format!("negative depth for {url}"));
    }
    Ok(format!("{url} at depth {depth}"))
}

#[orca_task]
async fn ping() -> String {
    "pong".into()
}

#[orca_task]
async fn checked(limit: u32, context: TaskContext) -> Result<u32, TaskError> {
    if context.attempt() >= limit {
        return Err(TaskError::new("gave up").no_retry());
    }
    Err(TaskError::new("not yet").retry_after(Duration::from_millis(10)))
}

fn context(attempt: u32) -> TaskContext {
    TaskContext::new(TaskId::new(), attempt, CancellationToken::new())
}

#[tokio::test]
async fn the_function_stays_callable() {
    assert_eq!(fetch_page("a".into(), 1).await.unwrap(), "a at depth 1");
    assert_eq!(ping().await, "pong");
}

#[test]
fn options_come_from_the_attribute() {
    assert_eq!(fetch_page::Task::NAME, "crawl.fetch");
    assert_eq!(
        fetch_page::task().options(),
        TaskOptions {
            queue: "crawl",
            retries: 5,
            backoff: Backoff {
                first: Duration::from_millis(250),
                ..Backoff::default()
            },
            timeout: Some(Duration::from_secs(30)),
            priority: 2,
            max_deliveries: 3,
        }
    );
    assert_eq!(ping::Task::NAME, "ping");
    assert_eq!(ping::task().options(), TaskOptions::default());
}

#[tokio::test]
async fn runs_take_decoded_arguments_and_map_errors() {
    let task = fetch_page::task();
    let args = decode_args::<fetch_page::Task>(br#"["https://example.com", 2]"#).unwrap();
    assert_eq!(
        task.run(args, context(0)).await.unwrap(),
        "https://example.com at depth 2"
    );
    let failed = task.run(("x".into(), -1), context(0)).await.unwrap_err();
    assert_eq!(failed.message(), "negative depth for x");
    assert_eq!(failed.retry(), Retry::AsConfigured);
}

#[tokio::test]
async fn a_task_sees_its_context_and_chooses_its_retry() {
    let task = checked::task();
    let early = task.run((2,), context(0)).await.unwrap_err();
    assert_eq!(early.retry(), Retry::After(Duration::from_millis(10)));
    let late = task.run((2,), context(2)).await.unwrap_err();
    assert_eq!(late.retry(), Retry::Never);
    // The context is not an argument on the wire.
    assert_eq!(encode_args::<checked::Task>(&(2,)).unwrap(), b"[2]");
}

#[tokio::test]
async fn a_task_without_arguments_takes_an_empty_array() {
    assert_eq!(encode_args::<ping::Task>(&[]).unwrap(), b"[]");
    let args = decode_args::<ping::Task>(b"[]").unwrap();
    assert_eq!(ping::task().run(args, context(0)).await.unwrap(), "pong");
    assert!(decode_args::<ping::Task>(b"[1]").is_err());
}

#[test]
fn arguments_that_do_not_fit_are_errors_naming_the_task() {
    for json in [&br#"["x"]"#[..], br#"["x", "deep"]"#, b"{}", b"not json"] {
        let error = decode_args::<fetch_page::Task>(json).unwrap_err();
        assert!(error.to_string().contains("crawl.fetch"), "{error}");
    }
}

#[test]
fn unsupported_signatures_are_compile_errors() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
