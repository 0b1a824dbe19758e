//! Compiles proto/agora/v1/*.proto with the vendored protoc, so a fresh machine needs
//! nothing beyond cargo. Every message derives `serde::Serialize` so the operator API
//! and `GET /api/v1/state` render one snapshot type; enum fields are rendered by name.

const PROTOS: &[&str] = &[
    "proto/agora/v1/common.proto",
    "proto/agora/v1/scheduler.proto",
    "proto/agora/v1/agent.proto",
    "proto/agora/v1/executor.proto",
    "proto/agora/v1/operator.proto",
    "proto/agora/v1/state_store.proto",
    "proto/agora/v1/replication.proto",
];

/// Enum-typed fields (prost stores them as i32) and the serializer that names them.
const ENUM_FIELDS: &[(&str, &str)] = &[
    (
        "agora.v1.TaskStatus.state",
        "crate::serde_names::task_state",
    ),
    (
        "agora.v1.TaskStatus.source",
        "crate::serde_names::status_source",
    ),
    (
        "agora.v1.TaskStatus.reason",
        "crate::serde_names::status_reason",
    ),
    (
        "agora.v1.TaskSummary.state",
        "crate::serde_names::task_state",
    ),
    (
        "agora.v1.TaskReport.state",
        "crate::serde_names::task_state",
    ),
    (
        "agora.v1.StatusUpdate.latest_state",
        "crate::serde_names::task_state",
    ),
    (
        "agora.v1.ContainerInfo.type",
        "crate::serde_names::container_type",
    ),
    (
        "agora.v1.ExecutorInfo.type",
        "crate::serde_names::executor_type",
    ),
    (
        "agora.v1.HealthCheck.type",
        "crate::serde_names::health_check_type",
    ),
    ("agora.v1.Volume.mode", "crate::serde_names::volume_mode"),
    (
        "agora.v1.FrameworkInfo.Capability.type",
        "crate::serde_names::capability_type",
    ),
];

/// Byte fields rendered as lowercase hex rather than arrays of numbers.
const BYTES_FIELDS: &[&str] = &[
    "agora.v1.TaskStatus.uuid",
    "agora.v1.TaskStatus.data",
    "agora.v1.TaskInfo.data",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    // Ordered, so equal states encode to equal bytes.
    config.btree_map([".agora.v1.ReplicatedSnapshot.members"]);
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let mut builder = tonic_prost_build::configure()
        .type_attribute(".agora.v1", "#[derive(serde::Serialize)]")
        .type_attribute(".agora.v1", "#[serde(rename_all = \"snake_case\")]");
    for (field, with) in ENUM_FIELDS {
        builder = builder.field_attribute(*field, format!("#[serde(serialize_with = \"{with}\")]"));
    }
    for field in BYTES_FIELDS {
        builder = builder.field_attribute(
            *field,
            "#[serde(serialize_with = \"crate::serde_names::hex\")]",
        );
    }
    builder.compile_with_config(config, PROTOS, &["proto"])?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
