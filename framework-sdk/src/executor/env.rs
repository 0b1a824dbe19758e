//! The environment an agent gives the executors it starts: the variable names and
//! [`ExecutorEnv`], shared with the agent through `agora-core` so that an executor
//! depends on the SDK only.

pub use agora_core::executor_env::{
    AGENT_ENDPOINT, EXECUTOR_ID, EXECUTOR_TOKEN, EnvError, ExecutorEnv, FRAMEWORK_ID,
    MESOS_SANDBOX, RECOVERY_TIMEOUT_SECONDS, SANDBOX,
};
