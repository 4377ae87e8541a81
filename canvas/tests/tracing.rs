//! OpenTelemetry end to end: the real `gateway` and `saver` binaries export their spans over OTLP/gRPC to an
//! in-test receiver, and an edit's and a save's spans arrive with the right parent/child shape.
//!
//! - edit: `apply_edit` (canvas-gateway) → `redis.edit_script` → `fan_out` (the latter's parent travels in the
//!   pub/sub message), all in one trace; when the gateway has a per-frame `ws_frame` span, it is the parent of
//!   `apply_edit`.
//! - save: `save_pass` (canvas-saver) → `save_project` (project = ours) → `read_changes`, `batch_write`,
//!   `release_claim`.
//!
//! The binaries are taken from next to this test (`target/debug/`); `cargo test --workspace` builds them. Run
//! with `--nocapture` to see the rendered span trees (what a trace UI would show).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use canvas_testkit::otlp::ReceivedSpan;
use canvas_testkit::{
    free_port, http_get, wait_for_port, ChildProcess, Dynalite, OtlpReceiver, RedisServer, TempDir,
    WsClient,
};
use serde_json::json;

/// How long spans may take to arrive (the exporters flush every 200 ms here; the SDK default is 5 s).
const SPAN_WAIT: Duration = Duration::from_secs(15);

/// `target/<profile>/<name>` next to this test executable (`target/<profile>/deps/tracing-…`).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable under target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "the `{name}` binary is missing at {}: build the binaries first with `cargo build --workspace --bins` \
         (`cargo test --workspace` does it)",
        path.display()
    );
    path
}

/// Starts binary `name` with exactly `env` (nothing from the developer's shell), its stderr logged in `logs`.
fn start(name: &'static str, logs: &TempDir, env: &[(&str, String)]) -> ChildProcess {
    let mut command = ChildProcess::command(name, binary(name))
        .clean_env()
        .log_in(logs.path());
    for (key, value) in env {
        command = command.env(key, value);
    }
    command.spawn()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Attributes worth showing (the tracing bridge adds code location, thread and timing attributes to every span).
fn shown(key: &str) -> bool {
    !(key.starts_with("code.")
        || key.starts_with("thread.")
        || matches!(key, "busy_ns" | "idle_ns" | "target" | "level"))
}

/// The spans of one trace as an indented tree: `name [service] key=value …`, children under their parent in
/// arrival order; a span whose parent never arrived (or lives in another trace) is shown as a root, marked.
pub fn render_trace(spans: &[ReceivedSpan], trace_id: &[u8]) -> String {
    let in_trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let ids: std::collections::HashSet<&[u8]> =
        in_trace.iter().map(|s| s.span_id.as_slice()).collect();
    let mut children: HashMap<&[u8], Vec<&ReceivedSpan>> = HashMap::new();
    let mut roots = Vec::new();
    for span in &in_trace {
        if !span.parent_span_id.is_empty() && ids.contains(span.parent_span_id.as_slice()) {
            children
                .entry(span.parent_span_id.as_slice())
                .or_default()
                .push(span);
        } else {
            roots.push(*span);
        }
    }
    fn walk(
        out: &mut String,
        span: &ReceivedSpan,
        depth: usize,
        children: &HashMap<&[u8], Vec<&ReceivedSpan>>,
    ) {
        let attrs: Vec<String> = span
            .attributes
            .iter()
            .filter(|(k, _)| shown(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let orphan = if depth == 0 && !span.parent_span_id.is_empty() {
            format!(" (parent {} not received)", hex(&span.parent_span_id))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{}{} [{}] {}{}\n",
            "  ".repeat(depth + 1),
            span.name,
            span.service,
            attrs.join(" "),
            orphan
        ));
        for child in children.get(span.span_id.as_slice()).into_iter().flatten() {
            walk(out, child, depth + 1, children);
        }
    }
    let mut out = format!("trace {}\n", hex(trace_id));
    for root in roots {
        walk(&mut out, root, 0, &children);
    }
    out
}

/// Every trace received, rendered (for failure messages).
fn render_all(spans: &[ReceivedSpan]) -> String {
    let mut traces: Vec<&[u8]> = Vec::new();
    for span in spans {
        if !traces.contains(&span.trace_id.as_slice()) {
            traces.push(&span.trace_id);
        }
    }
    let mut out = format!("{} spans in {} traces:\n", spans.len(), traces.len());
    for trace in traces {
        out.push_str(&render_trace(spans, trace));
    }
    out
}

fn find(spans: &[ReceivedSpan], pred: impl Fn(&ReceivedSpan) -> bool) -> Option<&ReceivedSpan> {
    spans.iter().find(|s| pred(s))
}

fn child_of<'a>(
    spans: &'a [ReceivedSpan],
    parent: &ReceivedSpan,
    name: &str,
) -> Option<&'a ReceivedSpan> {
    find(spans, |s| {
        s.name == name && s.trace_id == parent.trace_id && s.parent_span_id == parent.span_id
    })
}

/// The edit's spans: apply_edit → redis.edit_script → fan_out.
struct EditSpans<'a> {
    apply: &'a ReceivedSpan,
    script: &'a ReceivedSpan,
    fan_out: &'a ReceivedSpan,
}

fn edit_spans<'a>(spans: &'a [ReceivedSpan], project: &str, object: &str) -> Option<EditSpans<'a>> {
    let apply = find(spans, |s| {
        s.name == "apply_edit"
            && s.attr("project") == Some(project)
            && s.attr("object") == Some(object)
    })?;
    // The first edit of a project nobody stored runs the script twice (not loaded, then after the cold load): the
    // one that applied it is the one with a fan-out.
    let (script, fan_out) = spans
        .iter()
        .filter(|s| {
            s.name == "redis.edit_script"
                && s.trace_id == apply.trace_id
                && s.parent_span_id == apply.span_id
        })
        .find_map(|script| Some((script, child_of(spans, script, "fan_out")?)))?;
    Some(EditSpans {
        apply,
        script,
        fan_out,
    })
}

/// The save's spans: save_pass → save_project (ours) → batch_write.
struct SaveSpans<'a> {
    pass: &'a ReceivedSpan,
    project: &'a ReceivedSpan,
    batch: &'a ReceivedSpan,
}

fn save_spans<'a>(spans: &'a [ReceivedSpan], project: &str) -> Option<SaveSpans<'a>> {
    // Our project may be in several passes only if a save failed; take the one that wrote.
    spans
        .iter()
        .filter(|s| s.name == "save_project" && s.attr("project") == Some(project))
        .find_map(|save_project| {
            let batch = child_of(spans, save_project, "batch_write")?;
            let pass = find(spans, |s| {
                s.name == "save_pass"
                    && s.trace_id == save_project.trace_id
                    && s.span_id == save_project.parent_span_id
            })?;
            Some(SaveSpans {
                pass,
                project: save_project,
                batch,
            })
        })
}

/// The edit is complete when its three spans are in, and, when apply_edit has a parent, that parent too.
fn edit_complete(spans: &[ReceivedSpan], project: &str, object: &str) -> bool {
    edit_spans(spans, project, object).is_some_and(|e| {
        e.apply.parent_span_id.is_empty()
            || find(spans, |s| s.span_id == e.apply.parent_span_id).is_some()
    })
}

fn save_complete(spans: &[ReceivedSpan], project: &str) -> bool {
    save_spans(spans, project).is_some_and(|s| {
        child_of(spans, s.project, "read_changes").is_some()
            && child_of(spans, s.project, "release_claim").is_some()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_and_a_save_export_spans_with_the_right_shape() {
    let gateway_bin = binary("gateway");
    let saver_bin = binary("saver");
    println!(
        "binaries: {} and {}",
        gateway_bin.display(),
        saver_bin.display()
    );
    let receiver = OtlpReceiver::start().await;
    let redis = RedisServer::start();
    let dynalite = Dynalite::start();
    let logs = TempDir::new("tracing");
    let table = "canvas_tracing".to_string();
    let project = format!("trace-{}", std::process::id());
    let object = "traced-shape";

    let common = |extra: &[(&'static str, String)]| {
        let mut env: Vec<(&'static str, String)> = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
            ("REDIS_URL", redis.url()),
            ("DYNAMODB_ENDPOINT", dynalite.endpoint()),
            ("CANVAS_TABLE", table.clone()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("RUST_LOG", "info".into()),
            // Plain logs in the files printed on failure.
            ("NO_COLOR", "1".into()),
        ];
        env.extend(extra.iter().cloned());
        env
    };
    let saver_http = free_port();
    let mut saver = start(
        "saver",
        &logs,
        &common(&[
            ("CANVAS_CREATE_TABLE", "true".into()),
            ("SAVE_INTERVAL_MS", "200".into()),
            ("SAVER_HTTP_ADDR", format!("127.0.0.1:{saver_http}")),
            ("SAVER_GRPC_ADDR", format!("127.0.0.1:{}", free_port())),
        ]),
    );
    let gateway_port = free_port();
    let mut gateway = start(
        "gateway",
        &logs,
        &common(&[
            ("GATEWAY_ADDR", format!("127.0.0.1:{gateway_port}")),
            ("CANVAS_AUTH_DISABLED", "true".into()),
        ]),
    );
    let dump = |saver: &ChildProcess, gateway: &ChildProcess, spans: &[ReceivedSpan]| {
        format!(
            "{}\n--- saver log ---\n{}\n--- gateway log ---\n{}",
            render_all(spans),
            saver.logs(),
            gateway.logs()
        )
    };

    // The saver creates the table the gateway loads projects from.
    let readyz = format!("http://127.0.0.1:{saver_http}/readyz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((200, _)) = http_get(&readyz, &[]).await {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the saver never became ready\n{}",
            dump(&saver, &gateway, &receiver.spans())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        wait_for_port(gateway_port, Duration::from_secs(20)),
        "the gateway did not listen\n{}",
        dump(&saver, &gateway, &receiver.spans())
    );

    // Two clients; one creates, the other receives it.
    let url = format!("ws://127.0.0.1:{gateway_port}/ws/projects/{project}");
    let (mut alice, _) = WsClient::join(&url).await.expect("alice joins");
    let (mut bob, _) = WsClient::join(&url).await.expect("bob joins");
    let ack = alice
        .request(
            json!({"type": "create", "object": {"id": object, "type": "rect", "x": 1, "y": 2}}),
        )
        .await
        .expect("ack");
    assert_eq!(ack["type"], "ack", "{ack}");
    let created = bob.recv_type("created").await.expect("bob receives it");
    assert_eq!(created["object"]["id"], object, "{created}");

    let spans = receiver
        .wait_for(SPAN_WAIT, |spans| {
            edit_complete(spans, &project, object) && save_complete(spans, &project)
        })
        .await;
    let spans = if edit_complete(&spans, &project, object) && save_complete(&spans, &project) {
        spans
    } else {
        // Not all in yet: stop the services, which flushes their exporters, and look again.
        saver.terminate(Duration::from_secs(10)).await;
        gateway.terminate(Duration::from_secs(10)).await;
        receiver
            .wait_for(Duration::from_secs(5), |spans| {
                edit_complete(spans, &project, object) && save_complete(spans, &project)
            })
            .await
    };
    let context = dump(&saver, &gateway, &spans);

    // The edit.
    let edit = edit_spans(&spans, &project, object).unwrap_or_else(|| {
        panic!("no apply_edit → redis.edit_script → fan_out for {project}/{object}\n{context}")
    });
    assert_eq!(edit.apply.service, "canvas-gateway", "{context}");
    assert_eq!(edit.script.service, "canvas-gateway", "{context}");
    assert_eq!(edit.fan_out.service, "canvas-gateway", "{context}");
    assert_eq!(edit.apply.attr("kind"), Some("create"), "{context}");
    assert_eq!(edit.apply.attr("result"), Some("ok"), "{context}");
    assert_eq!(
        edit.script.attr("project"),
        Some(project.as_str()),
        "{context}"
    );
    assert_eq!(
        edit.fan_out.attr("project"),
        Some(project.as_str()),
        "{context}"
    );
    assert_eq!(
        edit.fan_out.attr("seq"),
        edit.apply.attr("seq"),
        "fan_out is the fan-out of this edit\n{context}"
    );
    let ws_frames = spans.iter().filter(|s| s.name == "ws_frame").count();
    if ws_frames > 0 {
        let parent = find(&spans, |s| s.span_id == edit.apply.parent_span_id);
        assert!(
            parent.is_some_and(|p| p.name == "ws_frame" && p.trace_id == edit.apply.trace_id),
            "ws_frame spans exist, so apply_edit's parent must be its ws_frame\n{context}"
        );
    }

    // The save.
    let save = save_spans(&spans, &project).unwrap_or_else(|| {
        panic!("no save_pass → save_project(project={project}) → batch_write\n{context}")
    });
    assert_eq!(save.pass.service, "canvas-saver", "{context}");
    assert_eq!(save.project.service, "canvas-saver", "{context}");
    assert_eq!(save.batch.service, "canvas-saver", "{context}");
    assert_eq!(save.project.attr("objects"), Some("1"), "{context}");
    assert_eq!(save.project.attr("retries"), Some("0"), "{context}");
    assert_eq!(save.project.attr("outcome"), Some("saved"), "{context}");
    assert_eq!(
        save.batch.attr("project"),
        Some(project.as_str()),
        "{context}"
    );
    assert_eq!(save.batch.attr("items"), Some("1"), "{context}");
    assert_eq!(save.batch.attr("outcome"), Some("written"), "{context}");
    assert!(
        save.pass
            .attr("objects")
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 1),
        "{context}"
    );
    let read = child_of(&spans, save.project, "read_changes").expect("read_changes");
    assert_eq!(read.attr("upserts"), Some("1"), "{context}");
    let release = child_of(&spans, save.project, "release_claim").expect("release_claim");
    assert_eq!(release.attr("action"), Some("complete"), "{context}");
    assert_ne!(
        save.pass.trace_id, edit.apply.trace_id,
        "a save is its own trace\n{context}"
    );

    println!(
        "--- one edit ---\n{}",
        render_trace(&spans, &edit.apply.trace_id)
    );
    println!(
        "--- one save ---\n{}",
        render_trace(&spans, &save.pass.trace_id)
    );

    // A sample of the saver's Prometheus text, while it runs.
    if let Ok((200, body)) = http_get(
        &format!("http://127.0.0.1:{saver_http}/metrics/prometheus"),
        &[],
    )
    .await
    {
        println!("--- saver /metrics/prometheus ---\n{body}");
    }

    alice.close().await;
    bob.close().await;
    saver.terminate(Duration::from_secs(10)).await;
    gateway.terminate(Duration::from_secs(10)).await;
}
