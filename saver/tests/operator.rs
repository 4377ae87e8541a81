//! What operators see: `/metrics` JSON shape, `/healthz`, `/readyz` (including a missing table), gRPC
//! `GetMetrics` + health + reflection, and the optional operator token.

mod common;

use std::sync::Arc;
use std::time::Duration;

use canvas_proto::saver::v1::saver_metrics_client::SaverMetricsClient;
use canvas_proto::saver::v1::GetMetricsRequest;
use canvas_shared::durable::DurableStore;
use canvas_testkit::Dynalite;
use common::*;
use futures_util::StreamExt;
use serde_json::Value;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

async fn channel(url: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn metrics_json_has_the_contract_shape_and_reports_dirty_projects() {
    let env = Env::start().await;
    let hot = env.hot();
    let mut s = settings();
    // The first pass runs at start; after it, edits wait for the final flush.
    s.interval = Duration::from_secs(600);
    let saver = spawn_saver(Arc::clone(&hot), Arc::new(env.store.clone()), s).await;
    wait_until(Duration::from_secs(5), "loop running", || async {
        saver.metrics.auto_save().passes >= 1
    })
    .await;

    let m = metrics_json(saver.http).await;
    let a = &m["autoSave"];
    assert_eq!(a["isRunning"], true);
    assert_eq!(a["intervalMs"], 600_000);
    assert_eq!(a["totalSaves"], 0);
    assert_eq!(a["totalObjectsSaved"], 0);
    assert_eq!(a["successRate"], 100.0);
    assert_eq!(a["failedSaves"], 0);
    assert!(a["averageDurationMs"].is_number());
    assert_eq!(a["recentSaves"], Value::Array(vec![]));
    assert_eq!(a["recentErrors"], Value::Array(vec![]));
    let d = &m["dirtyProjects"];
    assert_eq!(d["count"], 0);
    assert!(d["oldestModification"].is_null());
    assert_eq!(d["projectIds"], Value::Array(vec![]));

    let before = canvas_shared::time::now_ms();
    open(hot.as_ref(), "m1").await;
    create(hot.as_ref(), "m1", rect("o1", 1)).await;
    create(hot.as_ref(), "m1", rect("o2", 1)).await;
    let m = metrics_json(saver.http).await;
    let d = &m["dirtyProjects"];
    assert_eq!(d["count"], 1);
    assert!(d["oldestModification"].as_i64().unwrap() >= before);
    assert_eq!(d["projectIds"], serde_json::json!(["m1"]));

    let (status, body) = http_get(saver.http, "/healthz", None).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, body) = http_get(saver.http, "/readyz", None).await;
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);

    // SIGTERM-equivalent: the final flush saves what the timer never got to.
    let metrics = Arc::clone(&saver.metrics);
    saver.stop().await;
    assert_persisted(hot.as_ref(), &env.store, "m1").await;
    let a = metrics.auto_save();
    assert!(!a.is_running);
    assert_eq!(a.saving_passes, 1);
    assert_eq!(a.total_objects_saved, 2);
    let recent = serde_json::to_value(&a.recent_saves).unwrap();
    let entry = &recent[0];
    assert_eq!(entry["projects"], 1);
    assert_eq!(entry["objects"], 2);
    assert!(entry["at"].as_i64().unwrap() >= before);
    assert!(entry["durationMs"].is_number());
}

#[tokio::test]
async fn readyz_names_the_missing_table_without_the_create_flag() {
    let redis = canvas_testkit::RedisServer::start();
    let dynalite = Dynalite::start();
    let hot: Arc<dyn canvas_shared::hot::HotStore> =
        Arc::new(canvas_shared::hot::redis::RedisHotState::connect(&redis.url()).unwrap());
    let store = dynamo(&dynalite, "no_such_canvas_table").await;
    let mut s = settings();
    s.create_table = false;
    s.table = "no_such_canvas_table".into();
    let saver = spawn_saver(hot, Arc::new(store.clone()), s).await;

    let (status, body) = http_get(saver.http, "/readyz", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no_such_canvas_table"), "{body}");
    assert!(body.contains("CANVAS_CREATE_TABLE"), "{body}");
    assert_eq!(http_get(saver.http, "/healthz", None).await.0, 200);
    wait_until(Duration::from_secs(5), "error recorded", || async {
        !saver.metrics.auto_save().recent_errors.is_empty()
    })
    .await;
    let m = metrics_json(saver.http).await;
    assert_eq!(m["autoSave"]["isRunning"], false);
    assert_eq!(m["autoSave"]["state"], "waiting_for_store");
    assert!(m["autoSave"]["recentErrors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("no_such_canvas_table"));

    // Once the table exists the loop starts by itself.
    store.ensure_table(true).await.unwrap();
    wait_until(Duration::from_secs(5), "loop running", || async {
        saver.metrics.auto_save().is_running
    })
    .await;
    assert_eq!(http_get(saver.http, "/readyz", None).await.0, 200);
    saver.stop().await;
}

#[tokio::test]
async fn grpc_serves_metrics_health_and_reflection() {
    let env = Env::start().await;
    let hot = env.hot();
    open(hot.as_ref(), "g1").await;
    for i in 0..3 {
        create(hot.as_ref(), "g1", rect(&format!("o{i}"), i)).await;
    }
    let saver = spawn_saver(Arc::clone(&hot), Arc::new(env.store.clone()), settings()).await;
    wait_clean(hot.as_ref(), Duration::from_secs(10)).await;
    let url = format!("http://{}", saver.grpc);

    let mut client = SaverMetricsClient::connect(url.clone()).await.unwrap();
    let metrics = client
        .get_metrics(GetMetricsRequest {})
        .await
        .unwrap()
        .into_inner();
    let a = metrics.auto_save.expect("auto_save");
    assert!(a.is_running);
    assert_eq!(a.interval_ms, INTERVAL_MS);
    assert_eq!(a.total_objects_saved, 3);
    assert_eq!(a.success_rate, 100.0);
    assert_eq!(a.recent_saves.len(), 1);
    assert_eq!(a.recent_saves[0].objects, 3);
    let d = metrics.dirty_projects.expect("dirty_projects");
    assert_eq!(d.count, 0);
    assert_eq!(d.oldest_modification, None);
    // The same figures as the JSON.
    let json = metrics_json(saver.http).await;
    assert_eq!(json["autoSave"]["totalObjectsSaved"], a.total_objects_saved);

    let mut health = HealthClient::new(channel(&url).await);
    for service in ["", "canvas.saver.v1.SaverMetrics"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }

    let mut reflection = ServerReflectionClient::new(channel(&url).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"canvas.saver.v1.SaverMetrics".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    saver.stop().await;
}

#[tokio::test]
async fn operator_token_guards_metrics_but_not_probes() {
    let env = Env::start().await;
    let mut s = settings();
    s.operator_token = Some("s3cret".into());
    let saver = spawn_saver(env.hot(), Arc::new(env.store.clone()), s).await;

    assert_eq!(http_get(saver.http, "/metrics", None).await.0, 401);
    assert_eq!(http_get(saver.http, "/metrics", Some("wrong")).await.0, 401);
    assert_eq!(
        http_get(saver.http, "/metrics", Some("s3cret")).await.0,
        200
    );
    assert_eq!(http_get(saver.http, "/healthz", None).await.0, 200);
    wait_until(Duration::from_secs(5), "ready", || async {
        http_get(saver.http, "/readyz", None).await.0 == 200
    })
    .await;

    let url = format!("http://{}", saver.grpc);
    let mut client = SaverMetricsClient::connect(url.clone()).await.unwrap();
    let denied = client.get_metrics(GetMetricsRequest {}).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    let mut request = tonic::Request::new(GetMetricsRequest {});
    request
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    assert!(client.get_metrics(request).await.is_ok());
    let mut health = HealthClient::new(channel(&url).await);
    assert!(health
        .check(HealthCheckRequest {
            service: String::new()
        })
        .await
        .is_ok());
    saver.stop().await;
}
