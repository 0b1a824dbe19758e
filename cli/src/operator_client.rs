//! What the operator views share: flags, the gRPC connection, and cell formatting.

use agora_core::Resources;
use agora_proto as pb;
use anyhow::Context;
use clap::Args;

/// Flags of every operator view.
#[derive(Args, Clone)]
pub struct ViewArgs {
    /// Master address (host:port).
    #[arg(long, env = "AGORA_MASTER", default_value = "127.0.0.1:5050")]
    pub master: String,
    /// Print JSON (the same as GET /api/v1/state) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Fetches the cluster state over the operator API.
pub async fn fetch_state(master: &str) -> anyhow::Result<pb::ClusterState> {
    let endpoint = if master.contains("://") {
        master.to_string()
    } else {
        format!("http://{master}")
    };
    let mut client = pb::operator_client::OperatorClient::connect(endpoint.clone())
        .await
        .with_context(|| format!("cannot reach the master at {master}"))?
        .max_decoding_message_size(agora_core::limits::MAX_MESSAGE_BYTES);
    let state = client
        .get_state(pb::GetStateRequest {})
        .await
        .with_context(|| format!("the master at {master} refused GetState"))?;
    Ok(state.into_inner())
}

/// Prints a value as pretty JSON.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `used/total` of one scalar, e.g. `1.5/4`.
pub fn usage(used: &[pb::Resource], total: &[pb::Resource], name: &str) -> String {
    let used = Resources::from_proto(used)
        .map(|r| r.scalar(name))
        .unwrap_or(0.0);
    let total = Resources::from_proto(total)
        .map(|r| r.scalar(name))
        .unwrap_or(0.0);
    format!("{}/{}", trim(used), trim(total))
}

/// One scalar of a resource list.
pub fn scalar(resources: &[pb::Resource], name: &str) -> String {
    trim(
        Resources::from_proto(resources)
            .map(|r| r.scalar(name))
            .unwrap_or(0.0),
    )
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

pub fn id<T>(value: &Option<T>, get: impl Fn(&T) -> &str) -> String {
    value
        .as_ref()
        .map(|v| get(v).to_string())
        .unwrap_or_default()
}
