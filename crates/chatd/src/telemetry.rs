//! Where the daemon's logs and spans go: stderr as text or JSON lines (`--log-format`), and,
//! with `--otlp-endpoint`, OpenTelemetry traces over OTLP/gRPC.

use std::io::IsTerminal as _;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, filter::LevelFilter};

use crate::cli::LogFormat;

/// Why logging or the trace export cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `--log-filter` is not a `tracing` filter.
    #[error("invalid --log-filter {filter:?}: {reason}")]
    Filter {
        /// What was given.
        filter: String,
        /// Why it is refused.
        reason: String,
    },
    /// `--otlp-endpoint` is not usable.
    #[error("--otlp-endpoint {endpoint:?}: {reason}")]
    Otlp {
        /// What was given.
        endpoint: String,
        /// Why it is refused.
        reason: String,
    },
}

/// The trace export, while it runs; [`Telemetry::shutdown`] sends what is left.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the global subscriber: log lines at `filter` on stderr in `format`, and spans
    /// (info and above) exported to `otlp_endpoint` when given. Must run inside a Tokio
    /// runtime when exporting: the exporter's batches are sent from a task of it.
    pub fn init(
        filter: &str,
        format: LogFormat,
        otlp_endpoint: Option<&str>,
    ) -> Result<Self, TelemetryError> {
        let env_filter = EnvFilter::try_new(filter).map_err(|err| TelemetryError::Filter {
            filter: filter.to_owned(),
            reason: err.to_string(),
        })?;
        let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let logs = match format {
            LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).boxed(),
            // The event's fields at the top level, and every span it is in (a turn's `chat_id`).
            LogFormat::Json => logs
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .boxed(),
        };
        let provider = otlp_endpoint.map(tracer_provider).transpose()?;
        let traces = provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("chatd"))
                .with_filter(LevelFilter::INFO)
        });
        tracing_subscriber::registry()
            .with(logs.with_filter(env_filter))
            .with(traces)
            .init();
        Ok(Self { provider })
    }

    /// Exports the spans still buffered and stops the exporter (a no-op without one). Call it
    /// before the runtime is dropped.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(error = %err, "cannot export the last spans");
        }
    }
}

/// A provider that batches spans to the OTLP/gRPC collector at `endpoint`, named `chatd`.
fn tracer_provider(endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let invalid = |reason: String| TelemetryError::Otlp {
        endpoint: endpoint.to_owned(),
        reason,
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Err(invalid("expected an http:// or https:// URL".to_owned()));
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint);
    if endpoint.starts_with("https://") {
        exporter = exporter.with_tls_config(
            opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new().with_native_roots(),
        );
    }
    let exporter = exporter.build().map_err(|err| invalid(err.to_string()))?;
    let processor =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("chatd")
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}
