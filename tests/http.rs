//! The HTTP and WebSocket API of `orcastra serve`, over real sockets, with
//! a worker in this process that reaches the server's queue through the
//! Redis protocol (`redis://`), as a worker in another process would.
#![cfg(feature = "redis")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use orcastra::prelude::*;
use orcastra::server::{Server, ServerOptions, http};
use orcastra::streams::{Backend, Embedded};
use serde_json::{Value, json};

#[orca_task(queue = "web")]
async fn shout(text: String) -> String {
    text.to_uppercase()
}

/// A server over memory streams with both endpoints on free ports; it
/// stops with the test's runtime.
async fn serve() -> (SocketAddr, String) {
    let engine = Arc::new(Embedded::memory());
    let options = ServerOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..ServerOptions::default()
    };
    let (server, listener) = Server::bind(Arc::clone(&engine), options).await.unwrap();
    let resp = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));
    let orca = Orcastra::on(Backend::Memory(Arc::clone(&engine)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, http::router(orca, engine)).into_future());
    (resp, base)
}

/// A worker in this process that reaches the server's queue through the
/// Redis protocol.
async fn start_worker(resp: SocketAddr) -> orcastra::worker::Worker {
    let orca = Orcastra::open(&format!("redis://{resp}")).await.unwrap();
    orca.worker().register(shout::task()).start().await.unwrap()
}

async fn submit(client: &reqwest::Client, base: &str, body: Value) -> (u16, Value) {
    let reply = client
        .post(format!("{base}/tasks"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

async fn status_of(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

async fn get(client: &reqwest::Client, url: String) -> (u16, Value) {
    let reply = client.get(url).send().await.unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap())
}

/// Polls a task's state until it is `wanted` (the server learns states by
/// following the state stream).
async fn wait_for_state(client: &reqwest::Client, base: &str, id: &str, wanted: &str) -> Value {
    wait_for(client, base, id, |state| state["state"] == wanted).await
}

async fn wait_for(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    for _ in 0..1000 {
        let (status, state) = get(client, format!("{base}/tasks/{id}")).await;
        if status == 200 && wanted(&state) {
            return state;
        }
        last = state;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {id} never reached the state waited for: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_submitted_over_http_run_on_a_worker_that_speaks_redis() {
    let (resp, base) = serve().await;
    let client = reqwest::Client::new();

    let (ws, _) = tokio_tungstenite::connect_async(format!(
        "{}/events?queue=web",
        base.replace("http", "ws")
    ))
    .await
    .unwrap();
    let (_, mut events) = ws.split();

    let (status, reply) = submit(
        &client,
        &base,
        json!({"name": "shout", "queue": "web", "args": ["hi"]}),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    let id = reply["id"].as_str().unwrap().to_string();
    // Started only now: a worker that is already waiting can take the task
    // from its queue and record `running` before the submission records
    // `queued`, leaving no queued time for the start latency.
    let worker = start_worker(resp).await;
    let done = wait_for_state(&client, &base, &id, "succeeded").await;
    assert_eq!(done["result"], "HI");
    assert_eq!(done["queue"], "web");
    assert_eq!(done["name"], "shout");

    // The WebSocket saw the task's life, in order, each state once.
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("succeeded") {
        let message = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("state events over the WebSocket")
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_str(message.to_text().unwrap()).unwrap();
        assert_eq!(event["queue"], "web");
        if event["id"] == id.as_str() {
            seen.push(event["state"].as_str().unwrap().to_string());
        }
    }
    // A worker can record `running` before the submission records
    // `queued`; then `queued` is not news and is not sent.
    assert!(
        seen == ["queued", "running", "succeeded"] || seen == ["running", "succeeded"],
        "{seen:?}"
    );

    // A task no worker knows goes to the dead letters; it can be requeued
    // (and dies again) or dropped.
    let (_, reply) = submit(&client, &base, json!({"name": "whisper", "queue": "web"})).await;
    let lost = reply["id"].as_str().unwrap().to_string();
    wait_for_state(&client, &base, &lost, "dead").await;
    let (_, dead) = get(&client, format!("{base}/queues/web/dead")).await;
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
    assert_eq!(dead[0]["id"], lost.as_str());
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("whisper"),
        "{dead}"
    );
    let entry = dead[0]["entry"].as_str().unwrap().to_string();
    let requeue = client.post(format!("{base}/queues/web/dead/{entry}/requeue"));
    assert_eq!(status_of(requeue).await, 200);
    let entry = loop {
        let (_, dead) = get(&client, format!("{base}/queues/web/dead")).await;
        if let Some(letter) = dead.as_array().unwrap().first()
            && letter["entry"] != entry.as_str()
        {
            break letter["entry"].as_str().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Requeued, it ran a second attempt, which died too.
    wait_for(&client, &base, &lost, |state| {
        state["state"] == "dead" && state["attempt"] == 1
    })
    .await;
    let url = format!("{base}/queues/web/dead/{entry}");
    assert_eq!(status_of(client.delete(&url)).await, 200);
    assert_eq!(status_of(client.delete(&url)).await, 404);

    let (status, queues) = get(&client, format!("{base}/queues")).await;
    assert_eq!(status, 200);
    assert_eq!(
        queues,
        json!([{"name": "web", "queued": 0, "pending": 0, "dead": 0}])
    );

    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "orcastra_task_events_total{state=\"succeeded\"} 1",
        "orcastra_task_events_total{state=\"dead\"} 2",
        "orcastra_queue_tasks{queue=\"web\",state=\"queued\"} 0",
        "orcastra_task_start_latency_seconds_count 1",
        "orcastra_fsync_seconds_count",
        "orcastra_task_redeliveries_total 0",
    ] {
        assert!(metrics.contains(expected), "no {expected} in\n{metrics}");
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let (_, base) = serve().await;
    let client = reqwest::Client::new();
    let (status, reply) = submit(
        &client,
        &base,
        json!({"name": "shout", "args": {"text": "x"}}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        reply["error"].as_str().unwrap().contains("JSON array"),
        "{reply}"
    );
    let (status, reply) = submit(&client, &base, json!({"queue": "web"})).await;
    assert_eq!(status, 400);
    assert!(reply["error"].as_str().unwrap().contains("name"), "{reply}");
    let (status, reply) = submit(&client, &base, json!({"name": "shout", "priority": 9})).await;
    assert_eq!(status, 400);
    assert!(
        reply["error"].as_str().unwrap().contains("priority 9"),
        "{reply}"
    );
    let garbage = client
        .post(format!("{base}/tasks"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);

    let (status, reply) = get(&client, format!("{base}/tasks/not-a-task")).await;
    assert_eq!(
        (status, reply["error"].as_str().unwrap()),
        (400, "not a task id: not-a-task")
    );
    let unknown = "0190e1c4-0000-7000-8000-000000000000";
    assert_eq!(get(&client, format!("{base}/tasks/{unknown}")).await.0, 404);
    let cancel = client.post(format!("{base}/tasks/{unknown}/cancel"));
    assert_eq!(status_of(cancel).await, 404);
    let wrong_method = client.get(format!("{base}/queues/web/dead/1-1"));
    assert_eq!(status_of(wrong_method).await, 405);
    let bad_entry = client.delete(format!("{base}/queues/web/dead/x-y"));
    assert_eq!(status_of(bad_entry).await, 400);
    let requeue = client.post(format!("{base}/queues/web/dead/1-1/requeue"));
    assert_eq!(status_of(requeue).await, 404);
    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_task_cancelled_over_http_never_runs() {
    let (resp, base) = serve().await;
    let client = reqwest::Client::new();
    let (_, reply) = submit(
        &client,
        &base,
        json!({"name": "shout", "queue": "web", "args": ["x"], "delay_ms": 300}),
    )
    .await;
    let id = reply["id"].as_str().unwrap().to_string();
    wait_for_state(&client, &base, &id, "scheduled").await;
    let cancel = client
        .post(format!("{base}/tasks/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        cancel.json::<Value>().await.unwrap(),
        json!({"cancelled": true})
    );
    wait_for_state(&client, &base, &id, "cancelled").await;
    // Once due, a worker takes it from the queue and drops it unrun.
    let worker = start_worker(resp).await;
    let groups = format!("{base}/streams/orca:queue:web/groups");
    loop {
        let (_, groups) = get(&client, groups.clone()).await;
        if groups[0]["entries_read"] == 1 && groups[0]["pending"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, state) = get(&client, format!("{base}/tasks/{id}")).await;
    assert_eq!(state["state"], "cancelled");
    worker.stop().await;
}
