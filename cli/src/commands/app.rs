//! `agora app`: deploy, list, show, scale, restart and remove apps through an apps
//! instance's Marathon REST API (`--apps`, env `AGORA_APPS`).
//!
//! Every change is a deployment; the commands that start one print its id on
//! stdout (and what they did on stderr), so a script can follow it at
//! `/v2/deployments`. An app locked by a running deployment is refused (409) unless
//! `--force` is given, as with Marathon.

use anyhow::Context;
use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::Value;

use crate::rest_client::{self, Api, Reply, RestClient, count, print_json, read_input, text};
use crate::table;

/// The apps API, as messages name it.
const APPS_API: Api = Api {
    name: "the apps API",
    flag: "--apps",
    hint: "is `agora apps` or `agora dev` running? set --apps or AGORA_APPS",
    example: "http://127.0.0.1:8080",
};
/// Marathon names the deployment a change started in this header.
const DEPLOYMENT_HEADER: &str = "marathon-deployment-id";
/// Fields of an app's JSON that describe its state, not its definition: a definition
/// saved with `agora app show --json` is deployed without them (`version` would
/// otherwise ask for a rollback to that version).
const READ_ONLY_FIELDS: &[&str] = &[
    "version",
    "versionInfo",
    "tasks",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "lastTaskFailure",
    "readinessCheckResults",
    "taskStats",
];

#[derive(Args)]
pub struct AppArgs {
    /// URL of the apps API (an `agora apps` instance, or the one `agora dev` starts).
    #[arg(
        long,
        env = "AGORA_APPS",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub apps: String,
    #[command(subcommand)]
    pub command: AppCommand,
}

#[derive(Subcommand)]
pub enum AppCommand {
    /// Create an app from its JSON definition (a file, or - for stdin), or update
    /// the app with that id; prints the deployment's id.
    Deploy(DeployArgs),
    /// List apps: instances running/wanted, resources, deployments, health.
    List(ListArgs),
    /// Show one app with its tasks.
    Show(ShowArgs),
    /// Set the number of instances of an app.
    Scale(ScaleArgs),
    /// Replace every instance of an app, following its upgrade strategy.
    Restart(ChangeArgs),
    /// Remove an app: its instances are killed.
    Rm(ChangeArgs),
}

#[derive(Args)]
pub struct DeployArgs {
    /// JSON of one app (Marathon's app definition), or - to read it from stdin.
    pub file: String,
    /// Deploy even if the app is locked by a running deployment (which is cancelled).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct ListArgs {
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    /// The app's id (`/web` or `web`; `/prod/web` in a group).
    pub id: String,
    /// Print the API's JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ScaleArgs {
    /// The app's id.
    pub id: String,
    /// How many instances it should have.
    pub instances: u32,
    /// Scale even if the app is locked by a running deployment (which is cancelled).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct ChangeArgs {
    /// The app's id.
    pub id: String,
    /// Go ahead even if the app is locked by a running deployment (which is cancelled).
    #[arg(long)]
    pub force: bool,
}

pub async fn run(args: AppArgs) -> anyhow::Result<()> {
    let client = RestClient::new(APPS_API, &args.apps)?.describing_errors(describe_error);
    match args.command {
        AppCommand::Deploy(deploy) => {
            let text = read_input(&deploy.file, "the app's JSON").await?;
            let (id, body) = definition(&text, &deploy.file)?;
            let path = app_path(&id)?;
            let exists = match client.send(Method::GET, &path, None).await? {
                reply if reply.status == 200 => true,
                reply if reply.status == 404 => false,
                reply => anyhow::bail!("{}", describe_error(&APPS_API, &reply)),
            };
            let reply = if exists {
                // The file is the whole definition: what it leaves out goes back to
                // its default, as when it was created.
                let update = format!(
                    "{path}?partialUpdate=false{}",
                    if deploy.force { "&force=true" } else { "" }
                );
                client.call(Method::PUT, &update, Some(body)).await?
            } else {
                client.call(Method::POST, "/v2/apps", Some(body)).await?
            };
            let verb = if exists { "updating" } else { "creating" };
            report_deployment(&format!("{verb} {id}"), &reply)
        }
        AppCommand::List(list) => {
            let reply = client
                .call(
                    Method::GET,
                    "/v2/apps?embed=apps.counts&embed=apps.deployments",
                    None,
                )
                .await?;
            let body = reply.json(&APPS_API)?;
            if list.json {
                return print_json(&body);
            }
            let apps = body
                .get("apps")
                .and_then(Value::as_array)
                .context("the apps API's answer lacks \"apps\"")?;
            print!("{}", render_list(apps));
            Ok(())
        }
        AppCommand::Show(show) => {
            let path = format!(
                "{}?embed=app.tasks&embed=app.counts&embed=app.deployments&embed=app.lastTaskFailure",
                app_path(&show.id)?
            );
            let body = client
                .call(Method::GET, &path, None)
                .await?
                .json(&APPS_API)?;
            let app = body
                .get("app")
                .context("the apps API's answer lacks \"app\"")?;
            if show.json {
                return print_json(app);
            }
            print!("{}", render_app(app));
            Ok(())
        }
        AppCommand::Scale(scale) => {
            let path = with_force(&app_path(&scale.id)?, scale.force);
            let body = serde_json::json!({ "instances": scale.instances }).to_string();
            let reply = client.call(Method::PUT, &path, Some(body)).await?;
            report_deployment(
                &format!("scaling {} to {}", scale.id, scale.instances),
                &reply,
            )
        }
        AppCommand::Restart(restart) => {
            let path = with_force(
                &format!("{}/restart", app_path(&restart.id)?),
                restart.force,
            );
            let reply = client.call(Method::POST, &path, None).await?;
            report_deployment(&format!("restarting {}", restart.id), &reply)
        }
        AppCommand::Rm(rm) => {
            let path = with_force(&app_path(&rm.id)?, rm.force);
            let reply = client.call(Method::DELETE, &path, None).await?;
            report_deployment(&format!("removing {}", rm.id), &reply)
        }
    }
}

/// The app's id and the body to send: the definition without its read-only fields.
fn definition(text: &str, source: &str) -> anyhow::Result<(String, String)> {
    let source = if source == "-" { "stdin" } else { source };
    let mut app: Value =
        serde_json::from_str(text).with_context(|| format!("{source} does not hold JSON"))?;
    let object = app
        .as_object_mut()
        .with_context(|| format!("{source}: expected one app (a JSON object with an \"id\")"))?;
    for field in READ_ONLY_FIELDS {
        object.remove(*field);
    }
    let id = object
        .get("id")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .with_context(|| format!("{source}: the app has no \"id\""))?
        .to_string();
    Ok((id, app.to_string()))
}

/// `/v2/apps/<id>`, each segment of the id percent-encoded.
fn app_path(id: &str) -> anyhow::Result<String> {
    let trimmed = id.trim().trim_matches('/');
    anyhow::ensure!(!trimmed.is_empty(), "'{id}' is not an app id");
    let mut path = String::from("/v2/apps");
    for segment in trimmed.split('/') {
        anyhow::ensure!(
            !segment.is_empty(),
            "'{id}' is not an app id (empty segment)"
        );
        path.push('/');
        path.push_str(&crate::agent_client::encode(segment));
    }
    Ok(path)
}

fn with_force(path: &str, force: bool) -> String {
    if force {
        format!("{path}?force=true")
    } else {
        path.to_string()
    }
}

/// Prints the deployment a change started: its id on stdout, what it does on stderr.
fn report_deployment(what: &str, reply: &Reply) -> anyhow::Result<()> {
    match deployment_id(reply) {
        Some(id) => {
            eprintln!("{what}: deployment {id}");
            println!("{id}");
        }
        None => eprintln!("{what}: done (no deployment was needed)"),
    }
    Ok(())
}

/// The id of the deployment a change started: Marathon names it in a header, and in
/// the body as `deploymentId` (updates) or in `deployments` (a created app).
fn deployment_id(reply: &Reply) -> Option<String> {
    if let Some(id) = reply
        .headers
        .get(DEPLOYMENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        return Some(id.to_string());
    }
    let body: Value = serde_json::from_slice(&reply.body).ok()?;
    if let Some(id) = body.get("deploymentId").and_then(Value::as_str) {
        return Some(id.to_string());
    }
    body.get("deployments")?
        .as_array()?
        .iter()
        .find_map(|d| d.get("id").and_then(Value::as_str))
        .map(str::to_string)
}

/// Marathon's error answer made readable (see [`rest_client::describe_error`]), with
/// the deployments locking an app (409).
fn describe_error(api: &Api, reply: &Reply) -> String {
    let mut out = rest_client::describe_error(api, reply);
    let Ok(body) = serde_json::from_slice::<Value>(&reply.body) else {
        return out;
    };
    let locking: Vec<&str> = body
        .get("deployments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("id").and_then(Value::as_str))
        .collect();
    if !locking.is_empty() {
        out.push_str(&format!(
            "\n  locked by deployment {} (--force cancels it)",
            locking.join(", ")
        ));
    }
    out
}

/// `2 healthy, 1 unhealthy`, or `-` for an app without health checks.
fn health(app: &Value) -> String {
    let checked = app
        .get("healthChecks")
        .and_then(Value::as_array)
        .is_some_and(|checks| !checks.is_empty());
    if !checked {
        return "-".into();
    }
    let mut out = format!("{} healthy", count(app, "tasksHealthy"));
    let unhealthy = count(app, "tasksUnhealthy");
    if unhealthy > 0 {
        out.push_str(&format!(", {unhealthy} unhealthy"));
    }
    out
}

fn deployments(app: &Value) -> String {
    let ids: Vec<&str> = app
        .get("deployments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.get("id").and_then(Value::as_str))
        .collect();
    if ids.is_empty() {
        "-".into()
    } else {
        ids.join(",")
    }
}

/// The `agora app list` table.
fn render_list(apps: &[Value]) -> String {
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|app| {
            vec![
                text(app, "id"),
                format!("{}/{}", count(app, "tasksRunning"), count(app, "instances")),
                text(app, "cpus"),
                text(app, "mem"),
                deployments(app),
                health(app),
            ]
        })
        .collect();
    table::render(
        &[
            "ID",
            "INSTANCES",
            "CPUS",
            "MEM (MB)",
            "DEPLOYMENTS",
            "HEALTH",
        ],
        &rows,
    )
}

/// The `agora app show` summary: the definition's main fields, then the tasks.
fn render_app(app: &Value) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| {
        if !value.is_empty() {
            out.push_str(&format!("{label:<13} {value}\n"));
        }
    };
    line("id", text(app, "id"));
    line("cmd", text(app, "cmd"));
    if let Some(args) = app.get("args").filter(|a| !a.is_null()) {
        line("args", args.to_string());
    }
    line(
        "instances",
        format!(
            "{} running, {} staged, {} wanted",
            count(app, "tasksRunning"),
            count(app, "tasksStaged"),
            count(app, "instances")
        ),
    );
    line(
        "resources",
        format!(
            "cpus {}  mem {} MB  disk {} MB",
            text(app, "cpus"),
            text(app, "mem"),
            text(app, "disk")
        ),
    );
    if let Some(constraints) = app
        .get("constraints")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    {
        let rendered: Vec<String> = constraints.iter().map(Value::to_string).collect();
        line("constraints", rendered.join(" "));
    }
    if app.get("daemon").and_then(Value::as_bool) == Some(true) {
        line("daemon", "one instance on every matching agent".into());
    }
    line("health", health(app));
    line("version", text(app, "version"));
    line("deployments", deployments(app));
    if let Some(failure) = app.get("lastTaskFailure").filter(|f| f.is_object()) {
        line(
            "last failure",
            format!(
                "{} {} on {} at {}: {}",
                text(failure, "taskId"),
                text(failure, "state"),
                text(failure, "host"),
                text(failure, "timestamp"),
                text(failure, "message")
            ),
        );
    }
    let tasks = app
        .get("tasks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !tasks.is_empty() {
        let rows: Vec<Vec<String>> = tasks
            .iter()
            .map(|task| {
                let ports: Vec<String> = task
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| p.to_string())
                    .collect();
                let results: Vec<bool> = task
                    .get("healthCheckResults")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.get("alive").and_then(Value::as_bool))
                    .collect();
                let health = if results.is_empty() {
                    "-"
                } else if results.iter().all(|alive| *alive) {
                    "healthy"
                } else {
                    "unhealthy"
                };
                vec![
                    text(task, "id"),
                    text(task, "host"),
                    ports.join(","),
                    text(task, "state"),
                    health.to_string(),
                    text(task, "startedAt"),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table::render(
            &["TASK", "HOST", "PORTS", "STATE", "HEALTH", "STARTED"],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Bytes;
    use hyper::header::HeaderMap;
    use serde_json::json;

    fn reply(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn ids_become_encoded_paths() {
        assert_eq!(app_path("/web").unwrap(), "/v2/apps/web");
        assert_eq!(app_path("web").unwrap(), "/v2/apps/web");
        assert_eq!(app_path("/prod/web/").unwrap(), "/v2/apps/prod/web");
        assert_eq!(app_path("a b?").unwrap(), "/v2/apps/a%20b%3F");
        assert!(app_path("/").is_err());
        assert!(app_path("a//b").is_err());
        assert_eq!(with_force("/v2/apps/web", true), "/v2/apps/web?force=true");
        assert_eq!(with_force("/v2/apps/web", false), "/v2/apps/web");
    }

    #[test]
    fn definitions_lose_their_read_only_fields() {
        let (id, body) = definition(
            r#"{"id": "/web", "cmd": "sleep 100", "version": "2024-01-01T00:00:00.000Z",
                "tasks": [], "tasksRunning": 1, "deployments": [{"id": "d"}]}"#,
            "web.json",
        )
        .unwrap();
        assert_eq!(id, "/web");
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body, json!({"id": "/web", "cmd": "sleep 100"}));
        let error = definition("{\"cmd\": \"x\"}", "-").unwrap_err().to_string();
        assert!(
            error.contains("stdin") && error.contains("\"id\""),
            "{error}"
        );
        assert!(definition("[1]", "a.json").is_err());
        assert!(definition("{not json", "a.json").is_err());
        assert!(definition("{\"id\": 3}", "a.json").is_err());
    }

    #[test]
    fn deployment_ids_come_from_the_header_or_the_body() {
        let mut with_header = reply(201, json!({"id": "/web"}));
        with_header
            .headers
            .insert(DEPLOYMENT_HEADER, "d-1".parse().unwrap());
        assert_eq!(deployment_id(&with_header).as_deref(), Some("d-1"));
        let updated = reply(200, json!({"deploymentId": "d-2", "version": "v"}));
        assert_eq!(deployment_id(&updated).as_deref(), Some("d-2"));
        let created = reply(201, json!({"id": "/web", "deployments": [{"id": "d-3"}]}));
        assert_eq!(deployment_id(&created).as_deref(), Some("d-3"));
        assert_eq!(deployment_id(&reply(200, json!({}))), None);
    }

    #[test]
    fn marathon_errors_are_readable() {
        let invalid = reply(
            422,
            json!({"message": "Object is not valid", "details": [
                {"path": "/cpus", "errors": ["got 0.0, expected 0.001 or more"]},
                {"path": "/id", "errors": ["must be lowercase", "too long"]}
            ]}),
        );
        assert_eq!(
            describe_error(&APPS_API, &invalid),
            "the apps API answered 422: Object is not valid\n  \
             /cpus: got 0.0, expected 0.001 or more\n  /id: must be lowercase; too long"
        );
        let locked = reply(
            409,
            json!({"message": "App is locked by one or more deployments.",
                   "deployments": [{"id": "d-9"}]}),
        );
        let text = describe_error(&APPS_API, &locked);
        assert!(text.contains("locked by deployment d-9") && text.contains("--force"));
        let plain = Reply {
            status: 502,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"bad gateway\n"),
        };
        assert_eq!(
            describe_error(&APPS_API, &plain),
            "the apps API answered 502: bad gateway"
        );
    }

    #[test]
    fn the_list_shows_counts_resources_deployments_and_health() {
        let apps = vec![
            json!({"id": "/web", "instances": 3, "tasksRunning": 2, "cpus": 0.5, "mem": 128.0,
                   "deployments": [{"id": "d-1"}], "healthChecks": [{"protocol": "HTTP"}],
                   "tasksHealthy": 1, "tasksUnhealthy": 1}),
            json!({"id": "/db", "instances": 1, "tasksRunning": 1, "cpus": 1.0, "mem": 512,
                   "deployments": [], "healthChecks": []}),
        ];
        assert_eq!(
            render_list(&apps),
            "ID    INSTANCES  CPUS  MEM (MB)  DEPLOYMENTS  HEALTH\n\
             /web  2/3        0.5   128       d-1          1 healthy, 1 unhealthy\n\
             /db   1/1        1     512       -            -\n"
        );
    }

    #[test]
    fn an_app_shows_its_tasks() {
        let app = json!({"id": "/web", "cmd": "python3 -m http.server $PORT0", "instances": 1,
            "tasksRunning": 1, "tasksStaged": 0, "cpus": 0.1, "mem": 32, "disk": 0,
            "constraints": [["hostname", "UNIQUE"]], "healthChecks": [{}], "tasksHealthy": 1,
            "version": "2024-01-01T00:00:00.000Z", "deployments": [],
            "tasks": [{"id": "web.instance-1._app.1", "host": "node-1", "ports": [31000],
                       "state": "TASK_RUNNING", "healthCheckResults": [{"alive": true}],
                       "startedAt": "2024-01-01T00:00:01.000Z"}]});
        let shown = render_app(&app);
        assert!(
            shown.contains("instances     1 running, 0 staged, 1 wanted"),
            "{shown}"
        );
        assert!(shown.contains("[\"hostname\",\"UNIQUE\"]"), "{shown}");
        assert!(
            shown.contains("web.instance-1._app.1  node-1  31000  TASK_RUNNING  healthy"),
            "{shown}"
        );
    }
}
