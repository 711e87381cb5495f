//! Prometheus metrics of the operator.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Every metric, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Reconciles by kind.
    pub reconciles: IntCounterVec,
    /// Reconcile errors by kind.
    pub errors: IntCounterVec,
    /// Builds by phase (recounted from the cache).
    pub builds: IntGaugeVec,
    /// Step run time by step and outcome, from the steps' own reports.
    pub step_seconds: HistogramVec,
    /// Image blobs deleted by garbage collection.
    pub blobs_deleted: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("conda_store_reconciles_total", "Reconciles by kind"),
            &["kind"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "conda_store_reconcile_errors_total",
                "Failed reconciles by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let builds = IntGaugeVec::new(
            Opts::new("conda_store_builds", "Builds by phase"),
            &["phase"],
        )
        .expect("valid metric");
        let step_seconds = HistogramVec::new(
            HistogramOpts::new("conda_store_step_duration_seconds", "Build step run time").buckets(
                vec![
                    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
                ],
            ),
            &["step", "outcome"],
        )
        .expect("valid metric");
        let blobs_deleted = IntCounter::new(
            "conda_store_blobs_deleted_total",
            "Image blobs no build referenced, deleted",
        )
        .expect("valid metric");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(blobs_deleted.clone()),
            Box::new(errors.clone()),
            Box::new(builds.clone()),
            Box::new(step_seconds.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            reconciles,
            errors,
            builds,
            step_seconds,
            blobs_deleted,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("text encoding does not fail");
        out
    }
}
