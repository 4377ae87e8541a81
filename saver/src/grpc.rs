//! The gRPC face of the saver: `canvas.saver.v1.SaverMetrics/GetMetrics` with the same figures as
//! `GET /metrics`, the standard health service (SERVING while the save loop runs) and server reflection, so that
//! `grpcurl` works without the `.proto`.

use std::sync::Arc;

use canvas_proto::saver::v1 as pb;
use canvas_proto::saver::v1::saver_metrics_server::{SaverMetrics, SaverMetricsServer};
use canvas_shared::hot::SaveQueue;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use crate::metrics::{document, Metrics, MetricsDoc};
use crate::operator_token::{authorized, OperatorToken};
use crate::report::LoopState;

/// The SaverMetrics service.
struct MetricsService {
    hot: Arc<dyn SaveQueue>,
    metrics: Arc<Metrics>,
}

#[tonic::async_trait]
impl SaverMetrics for MetricsService {
    async fn get_metrics(
        &self,
        _request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::Metrics>, Status> {
        let doc = document(&self.metrics, self.hot.as_ref()).await;
        Ok(Response::new(to_proto(doc)))
    }
}

/// The JSON document as protobuf.
fn to_proto(doc: MetricsDoc) -> pb::Metrics {
    let a = doc.auto_save;
    let d = doc.dirty_projects;
    pb::Metrics {
        auto_save: Some(pb::AutoSave {
            is_running: a.is_running,
            interval_ms: a.interval_ms,
            total_saves: a.saving_passes,
            total_objects_saved: a.total_objects_saved,
            average_duration_ms: a.average_duration_ms,
            success_rate: a.success_rate,
            failed_saves: a.failed_saves,
            recent_saves: a
                .recent_saves
                .into_iter()
                .map(|s| pb::RecentSave {
                    at: s.at,
                    projects: s.projects,
                    objects: s.objects,
                    duration_ms: s.duration_ms,
                    failed: s.failed,
                    retries: s.retries,
                })
                .collect(),
            recent_errors: a
                .recent_errors
                .into_iter()
                .map(|e| pb::RecentError {
                    at: e.at,
                    project_id: e.project_id.unwrap_or_default(),
                    message: e.message,
                })
                .collect(),
            state: a.state.as_str().to_string(),
            successful_saves: a.successful_saves,
            lost_leases: a.lost_leases,
            retries: a.retries,
            passes: a.passes,
            owner: a.owner,
            lease_ms: a.lease_ms,
        }),
        dirty_projects_error: d.error.clone().unwrap_or_default(),
        dirty_projects: d.count.map(|count| pb::DirtyProjects {
            count: count as u64,
            oldest_modification: d.oldest_modification,
            project_ids: d.project_ids,
        }),
    }
}

const SERVICE_NAME: &str = "canvas.saver.v1.SaverMetrics";

/// Serves until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    hot: Arc<dyn SaveQueue>,
    metrics: Arc<Metrics>,
    operator_token: Option<OperatorToken>,
    stop: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // Health follows the save loop: SERVING while it runs.
    let mut states = metrics.watch_state();
    let health_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let state = *states.borrow_and_update();
            let status = match state {
                LoopState::Running | LoopState::Draining => ServingStatus::Serving,
                LoopState::WaitingForStore | LoopState::Stopped => ServingStatus::NotServing,
            };
            reporter.set_service_status(SERVICE_NAME, status).await;
            reporter.set_service_status("", status).await;
            tokio::select! {
                changed = states.changed() => if changed.is_err() { return },
                _ = health_stop.cancelled() => return,
            }
        }
    });
    let service = SaverMetricsServer::with_interceptor(
        MetricsService {
            hot,
            metrics: Arc::clone(&metrics),
        },
        move |request: Request<()>| {
            let header = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if authorized(operator_token.as_ref(), header) {
                Ok(request)
            } else {
                Err(Status::unauthenticated(
                    "a valid operator token is required: authorization: Bearer <SAVER_OPERATOR_TOKEN>",
                ))
            }
        },
    );
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(canvas_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(canvas_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha();
    let mut builder = tonic::transport::Server::builder();
    let mut router = builder.add_service(health).add_service(service);
    match reflection_v1 {
        Ok(r) => router = router.add_service(r),
        Err(e) => tracing::error!(error = %e, "gRPC reflection (v1) unavailable"),
    }
    match reflection_v1alpha {
        Ok(r) => router = router.add_service(r),
        Err(e) => tracing::error!(error = %e, "gRPC reflection (v1alpha) unavailable"),
    }
    router
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            stop.cancelled_owned(),
        )
        .await
}
