//! The API over real HTTP against a fake controller: a task that holds the root
//! group, runs edits, stamps versions and publishes snapshots like the real one,
//! and records what it was asked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use agora_sdk::proto as pb;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::{ApiContext, ApiInfo, DEPLOYMENT_ID_HEADER, router};
use crate::config::AppsConfig;
use crate::controller::{
    ActionView, Command, ControllerHandle, CurrentAction, DeploymentRef, DeploymentView,
    KillOutcome, QueueEntry, Snapshot, StepView, TaskFailure,
};
use crate::error::AppsError;
use crate::events::EventBus;
use crate::model::app::VersionInfo;
use crate::model::{AppDefinition, PathId, Timestamp};
use crate::state::{Goal, Instance};

/// What the fake controller was asked to do.
#[derive(Debug, Clone, PartialEq)]
enum Asked {
    Deploy { restart: Vec<PathId>, force: bool },
    Kill { ids: Vec<String>, scale: bool },
    Cancel { id: String, force: bool },
    ResetDelay(PathId),
}

struct Fake {
    snapshot: watch::Sender<Arc<Snapshot>>,
    asked: Mutex<Vec<Asked>>,
    /// Every definition stamped, by app and version (`get_version`).
    versions: Mutex<BTreeMap<(PathId, Timestamp), AppDefinition>>,
    next_millis: Mutex<i64>,
}

impl Fake {
    fn stamp(&self) -> Timestamp {
        let mut next = self.next_millis.lock().unwrap();
        *next += 1000;
        Timestamp::from_millis(*next)
    }

    fn deployment(&self, version: Timestamp) -> DeploymentRef {
        DeploymentRef {
            deployment_id: format!("deployment-{}", version.millis()),
            version,
        }
    }

    fn handle(&self, command: Command) {
        match command {
            Command::Deploy {
                edit,
                restart,
                force,
                reply,
            } => {
                self.asked.lock().unwrap().push(Asked::Deploy {
                    restart: restart.clone(),
                    force,
                });
                let current = self.snapshot.borrow().clone();
                let version = self.stamp();
                let answer = edit(&current.root, version).and_then(|mut root| {
                    if !force && !current.deployments.is_empty() {
                        return Err(AppsError::Locked {
                            deployments: current.deployments.iter().map(|d| d.id.clone()).collect(),
                        });
                    }
                    for (id, app) in root.apps.iter_mut() {
                        let unchanged = current.root.apps.get(id).is_some_and(|old| {
                            AppDefinition {
                                version: None,
                                version_info: None,
                                ..old.clone()
                            } == AppDefinition {
                                version: None,
                                version_info: None,
                                ..app.clone()
                            }
                        });
                        if !unchanged || restart.contains(id) {
                            app.version = Some(version);
                            app.version_info = Some(VersionInfo {
                                last_scaling_at: version,
                                last_config_change_at: version,
                            });
                            let mut versions = self.versions.lock().unwrap();
                            versions.insert((id.clone(), version), app.clone());
                        }
                    }
                    root.version = Some(version);
                    Ok(root)
                });
                match answer {
                    Ok(root) => {
                        self.snapshot.send_modify(|s| {
                            let mut next = (**s).clone();
                            for id in root.apps.keys() {
                                next.versions.entry(id.clone()).or_default().push(version);
                            }
                            next.root = Arc::new(root);
                            *s = Arc::new(next);
                        });
                        let _ = reply.send(Ok(self.deployment(version)));
                    }
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                }
            }
            Command::KillTasks {
                task_ids,
                scale,
                force: _,
                reply,
            } => {
                self.asked.lock().unwrap().push(Asked::Kill {
                    ids: task_ids.clone(),
                    scale,
                });
                let outcome = if scale {
                    KillOutcome::Scaled(self.deployment(self.stamp()))
                } else {
                    let snapshot = self.snapshot.borrow().clone();
                    KillOutcome::Killed(
                        snapshot
                            .instances
                            .values()
                            .flat_map(|list| list.iter())
                            .filter(|i| task_ids.contains(&i.task_id()))
                            .cloned()
                            .collect(),
                    )
                };
                let _ = reply.send(Ok(outcome));
            }
            Command::CancelDeployment { id, force, reply } => {
                self.asked.lock().unwrap().push(Asked::Cancel {
                    id: id.clone(),
                    force,
                });
                let answer = (!force).then(|| self.deployment(self.stamp()));
                let _ = reply.send(Ok(answer));
            }
            Command::ResetDelay { app, reply } => {
                self.asked.lock().unwrap().push(Asked::ResetDelay(app));
                let _ = reply.send(Ok(()));
            }
            Command::GetVersion {
                app,
                version,
                reply,
            } => {
                let found = self
                    .versions
                    .lock()
                    .unwrap()
                    .get(&(app.clone(), version))
                    .cloned()
                    .ok_or_else(|| {
                        AppsError::NotFound(format!(
                            "App '{app}' does not exist in version {version}"
                        ))
                    });
                let _ = reply.send(found);
            }
        }
    }
}

struct Harness {
    addr: SocketAddr,
    fake: Arc<Fake>,
    bus: EventBus,
    client: Client<HttpConnector, Full<Bytes>>,
}

struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn start() -> Harness {
    let (commands, mut receiver) = mpsc::channel::<Command>(16);
    let (snapshot, watch_receiver) = watch::channel(Arc::new(Snapshot {
        is_leader: true,
        framework_id: Some("framework-1".into()),
        ..Snapshot::default()
    }));
    let fake = Arc::new(Fake {
        snapshot,
        asked: Mutex::new(Vec::new()),
        versions: Mutex::new(BTreeMap::new()),
        next_millis: Mutex::new(1_700_000_000_000),
    });
    let worker = fake.clone();
    tokio::spawn(async move {
        while let Some(command) = receiver.recv().await {
            worker.handle(command);
        }
    });
    let bus = EventBus::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = AppsConfig::new(vec!["127.0.0.1:5050".into()], addr);
    let ctx = ApiContext {
        controller: ControllerHandle::new(commands, watch_receiver, bus.clone()),
        info: ApiInfo::new(&config, addr),
    };
    let app = router(ctx).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let client = Client::builder(TokioExecutor::new()).build_http();
    Harness {
        addr,
        fake,
        bus,
        client,
    }
}

impl Harness {
    async fn send(&self, method: &str, path: &str, body: Option<&str>, accept: &str) -> Answer {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path))
            .header("content-type", "application/json")
            .header("accept", accept)
            .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        self.send(method, path, body, "application/json").await
    }

    fn modify(&self, change: impl FnOnce(&mut Snapshot)) {
        self.fake.snapshot.send_modify(|s| {
            let mut next = (**s).clone();
            change(&mut next);
            *s = Arc::new(next);
        });
    }

    fn asked(&self) -> Vec<Asked> {
        self.fake.asked.lock().unwrap().clone()
    }

    async fn create(&self, body: Value) -> Answer {
        let answer = self.call("POST", "/v2/apps", Some(&body.to_string())).await;
        assert_eq!(answer.status, 201, "{}", answer.text);
        answer
    }
}

fn id(raw: &str) -> PathId {
    PathId::parse(raw).unwrap()
}

fn instance(
    app: &str,
    n: u32,
    state: pb::TaskState,
    healthy: Option<bool>,
    host: &str,
) -> Instance {
    Instance {
        instance_id: format!("{}.instance-{n}", id(app).safe_name()),
        app_id: id(app),
        app_version: Timestamp::from_millis(1_700_000_001_000),
        goal: Goal::Running,
        incarnation: 1,
        agent_id: Some(format!("agent-{host}")),
        host: Some(host.to_string()),
        ports: vec![31000 + u64::from(n)],
        state: Some(state as i32),
        healthy,
        ready: true,
        staged_at: Some(Timestamp::from_millis(1_700_000_002_000)),
        started_at: Some(Timestamp::from_millis(1_700_000_003_000)),
        unreachable_since: None,
        message: String::new(),
    }
}

fn deployment_view(deployment_id: &str, app: &str, waiting_for: Option<&str>) -> DeploymentView {
    DeploymentView {
        id: deployment_id.into(),
        version: Timestamp::from_millis(1_700_000_005_000),
        affected_apps: vec![id(app)],
        affected_pods: Vec::new(),
        steps: vec![StepView {
            actions: vec![ActionView {
                action: "ScaleApplication".into(),
                app: id(app),
            }],
        }],
        current_actions: vec![CurrentAction {
            action: "ScaleApplication".into(),
            app: id(app),
            readiness_check_results: Vec::new(),
            waiting_for: waiting_for.map(str::to_string),
        }],
        current_step: 1,
        total_steps: 1,
    }
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .cloned()
        .collect()
}

/// Keys Python's `marathon` 0.13 accepts (it passes them as keyword arguments).
fn assert_keys_within(value: &Value, allowed: &[&str]) {
    let allowed: BTreeSet<String> = allowed.iter().map(|k| k.to_string()).collect();
    let extra: Vec<_> = keys(value).difference(&allowed).cloned().collect();
    assert!(
        extra.is_empty(),
        "unknown to Marathon's clients: {extra:?} in {value}"
    );
}

const APP_KEYS: &[&str] = &[
    "acceptedResourceRoles",
    "args",
    "backoffFactor",
    "backoffSeconds",
    "cmd",
    "constraints",
    "container",
    "cpus",
    "dependencies",
    "deployments",
    "disk",
    "env",
    "executor",
    "healthChecks",
    "id",
    "role",
    "instances",
    "killSelection",
    "labels",
    "lastTaskFailure",
    "maxLaunchDelaySeconds",
    "mem",
    "ports",
    "requirePorts",
    "storeUrls",
    "taskRateLimit",
    "tasks",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "taskKillGracePeriodSeconds",
    "tasksUnhealthy",
    "upgradeStrategy",
    "unreachableStrategy",
    "uris",
    "user",
    "version",
    "versionInfo",
    "ipAddress",
    "fetch",
    "taskStats",
    "readinessChecks",
    "readinessCheckResults",
    "secrets",
    "portDefinitions",
    "residency",
    "gpus",
    "networks",
];

const TASK_KEYS: &[&str] = &[
    "appId",
    "healthCheckResults",
    "host",
    "id",
    "ports",
    "servicePorts",
    "slaveId",
    "stagedAt",
    "startedAt",
    "version",
    "ipAddresses",
    "state",
    "localVolumes",
    "region",
    "zone",
    "role",
];

async fn with_web_app(h: &Harness) {
    h.create(json!({
        "id": "/prod/web",
        "cmd": "python3 -m http.server $PORT0",
        "instances": 2,
        "labels": {"env": "prod"},
        "healthChecks": [{"protocol": "HTTP", "path": "/"}],
        "portDefinitions": [{"port": 10001}]
    }))
    .await;
}

#[tokio::test]
async fn create_answers_201_with_location_deployment_and_app() {
    let h = start().await;
    let answer = h
        .create(json!({"id": "/prod/web", "cmd": "sleep 100", "instances": 2}))
        .await;
    assert_eq!(answer.header("location"), Some("/v2/apps/prod/web"));
    let body = answer.json();
    let deployment_id = answer.header(DEPLOYMENT_ID_HEADER).unwrap().to_string();
    assert_eq!(body["deployments"], json!([{ "id": deployment_id }]));
    assert_eq!(body["id"], "/prod/web");
    assert_eq!(body["instances"], 2);
    assert_eq!(body["tasks"], json!([]));
    assert_eq!(body["tasksRunning"], 0);
    assert!(body["version"].is_string());
    assert_keys_within(&body, APP_KEYS);
    assert_eq!(
        h.asked(),
        vec![Asked::Deploy {
            restart: vec![],
            force: false
        }]
    );

    // Relative ids are resolved against the root.
    let answer = h.create(json!({"id": "db", "cmd": "sleep 1"})).await;
    assert_eq!(answer.json()["id"], "/db");
}

#[tokio::test]
async fn taken_ids_conflict() {
    let h = start().await;
    h.create(json!({"id": "/prod/web", "cmd": "sleep 1"})).await;
    for taken in ["/prod/web", "/prod"] {
        let answer = h
            .call(
                "POST",
                "/v2/apps",
                Some(&json!({"id": taken, "cmd": "x"}).to_string()),
            )
            .await;
        assert_eq!(answer.status, 409, "{taken}");
        assert!(
            answer.json()["message"]
                .as_str()
                .unwrap()
                .contains("already exists"),
            "{}",
            answer.text
        );
    }
}

#[tokio::test]
async fn bad_json_is_400_and_invalid_apps_422() {
    let h = start().await;
    for (method, path, body) in [
        ("POST", "/v2/apps", "{not json"),
        ("PUT", "/v2/apps", "[{"),
        ("PUT", "/v2/apps/a", "nope"),
        ("POST", "/v2/groups", "{"),
        ("POST", "/v2/tasks/delete", "{\"ids\": 1}"),
    ] {
        let answer = h.call(method, path, Some(body)).await;
        assert_eq!(answer.status, 400, "{method} {path}: {}", answer.text);
        let message = answer.json()["message"].as_str().unwrap().to_string();
        assert!(message.starts_with("Invalid JSON"), "{message}");
    }

    let answer = h
        .call(
            "POST",
            "/v2/apps",
            Some(r#"{"id": "/a", "cmd": "x", "instances": -1}"#),
        )
        .await;
    assert_eq!(answer.status, 422, "{}", answer.text);
    let body = answer.json();
    assert!(body["message"].is_string());
    let details = body["details"].as_array().unwrap();
    assert!(!details.is_empty());
    for detail in details {
        assert!(detail["path"].is_string(), "{detail}");
        assert!(
            detail["errors"]
                .as_array()
                .unwrap()
                .iter()
                .all(Value::is_string)
        );
    }
    assert!(
        h.asked().is_empty(),
        "nothing invalid reaches the controller"
    );
}

#[tokio::test]
async fn rejections_and_unknown_paths_are_json() {
    let h = start().await;
    for (method, path, status) in [
        ("GET", "/v2/apps?force=perhaps", 200),
        ("DELETE", "/v2/apps/a?force=perhaps", 400),
        ("GET", "/v2/apps/%FF", 400),
        ("GET", "/v2/nothing-here", 404),
        ("POST", "/v2/apps/a", 405),
        ("GET", "/v2/apps?label=env%20in%20(", 400),
    ] {
        let answer = h.call(method, path, None).await;
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.text);
        if status != 200 {
            assert!(answer.json()["message"].is_string(), "{}", answer.text);
        }
    }
}

#[tokio::test]
async fn apps_show_tasks_counts_deployments_and_failures() {
    let h = start().await;
    with_web_app(&h).await;
    h.create(json!({"id": "/other", "cmd": "sleep 1", "labels": {"env": "dev"}}))
        .await;
    h.modify(|s| {
        s.instances.insert(
            id("/prod/web"),
            Arc::new(vec![
                instance(
                    "/prod/web",
                    1,
                    pb::TaskState::TaskRunning,
                    Some(true),
                    "10.0.0.1",
                ),
                instance("/prod/web", 2, pb::TaskState::TaskStaging, None, "h2"),
                // A failed task waiting for its relaunch is not a task any more.
                instance("/prod/web", 3, pb::TaskState::TaskFailed, None, "h3"),
            ]),
        );
        s.deployments
            .push(deployment_view("d-1", "/prod/web", Some("an offer")));
        s.last_task_failure.insert(
            id("/prod/web"),
            TaskFailure {
                app_id: id("/prod/web"),
                host: "h3".into(),
                message: "exit 1".into(),
                state: "TASK_FAILED".into(),
                task_id: "prod_web.instance-3._app.1".into(),
                timestamp: Timestamp::from_millis(1_700_000_004_000),
                version: Timestamp::from_millis(1_700_000_001_000),
            },
        );
    });

    // The list: counts and deployments by default, no tasks.
    let list = h.call("GET", "/v2/apps", None).await.json();
    let web = &list["apps"][1];
    assert_eq!(web["id"], "/prod/web");
    assert_eq!(
        (
            &web["tasksRunning"],
            &web["tasksStaged"],
            &web["tasksHealthy"],
            &web["tasksUnhealthy"]
        ),
        (&json!(1), &json!(1), &json!(1), &json!(0))
    );
    assert_eq!(web["deployments"], json!([{"id": "d-1"}]));
    assert!(web.get("tasks").is_none());

    // Embeds, with Python's `app.` prefix and Marathon's `apps.` one.
    let list = h
        .call(
            "GET",
            "/v2/apps?embed=app.tasks&embed=apps.lastTaskFailure&embed=apps.taskStats",
            None,
        )
        .await
        .json();
    let web = &list["apps"][1];
    assert_eq!(web["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(web["lastTaskFailure"]["state"], "TASK_FAILED");
    assert_eq!(
        web["taskStats"]["totalSummary"]["stats"]["counts"]["running"],
        1
    );
    assert_keys_within(web, APP_KEYS);

    // Filters.
    let ids = |answer: Value| -> Vec<String> {
        answer["apps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(h.call("GET", "/v2/apps?id=WEB", None).await.json()),
        ["/prod/web"]
    );
    assert_eq!(
        ids(h.call("GET", "/v2/apps?cmd=http.server", None).await.json()),
        ["/prod/web"]
    );
    assert_eq!(
        ids(h.call("GET", "/v2/apps?label=env==dev", None).await.json()),
        ["/other"]
    );
    assert_eq!(
        ids(h
            .call("GET", "/v2/apps?label=env%20in%20(dev,prod)", None)
            .await
            .json())
        .len(),
        2
    );

    // One app: everything, tasks in Marathon's shape.
    let answer = h.call("GET", "/v2/apps/prod/web", None).await;
    assert_eq!(answer.status, 200);
    let app = &answer.json()["app"];
    assert_keys_within(app, APP_KEYS);
    assert_eq!(app["lastTaskFailure"]["host"], "h3");
    let tasks = app["tasks"].as_array().unwrap();
    let running = &tasks[0];
    assert_keys_within(running, TASK_KEYS);
    assert_eq!(running["id"], "prod_web.instance-1._app.1");
    assert_eq!(running["appId"], "/prod/web");
    assert_eq!(running["state"], "TASK_RUNNING");
    assert_eq!(running["host"], "10.0.0.1");
    assert_eq!(running["ports"], json!([31001]));
    assert_eq!(running["servicePorts"], json!([10001]));
    assert_eq!(running["slaveId"], "agent-10.0.0.1");
    assert_eq!(running["stagedAt"], "2023-11-14T22:13:22.000Z");
    assert_eq!(
        running["ipAddresses"],
        json!([{"ipAddress": "10.0.0.1", "protocol": "IPv4"}])
    );
    assert_eq!(running["healthCheckResults"][0]["alive"], true);
    assert_eq!(
        running["healthCheckResults"][0]["taskId"],
        "prod_web.instance-1._app.1"
    );
    assert_eq!(tasks[1]["state"], "TASK_STAGING");
    assert_eq!(tasks[1]["healthCheckResults"], json!([]));

    // Every app of a group.
    let all = h.call("GET", "/v2/apps/prod/*", None).await.json();
    assert_eq!(all["*"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn put_and_patch_merge_replace_create_and_roll_back() {
    let h = start().await;
    with_web_app(&h).await;
    let first_version = h.call("GET", "/v2/apps/prod/web", None).await.json()["app"]["version"]
        .as_str()
        .unwrap()
        .to_string();

    let answer = h
        .call("PUT", "/v2/apps/prod/web", Some(r#"{"instances": 5}"#))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let body = answer.json();
    assert_eq!(
        keys(&body),
        BTreeSet::from(["deploymentId".into(), "version".into()])
    );
    assert_eq!(
        answer.header(DEPLOYMENT_ID_HEADER),
        body["deploymentId"].as_str()
    );
    let app = h.call("GET", "/v2/apps/prod/web", None).await.json()["app"].clone();
    assert_eq!(app["instances"], 5);
    assert_eq!(
        app["cmd"], "python3 -m http.server $PORT0",
        "a partial update keeps the rest"
    );

    let answer = h
        .call("PATCH", "/v2/apps/prod/web", Some(r#"{"cpus": 0.5}"#))
        .await;
    assert_eq!(answer.status, 200);
    let app = h.call("GET", "/v2/apps/prod/web", None).await.json()["app"].clone();
    assert_eq!(
        (app["cpus"].as_f64(), app["instances"].as_i64()),
        (Some(0.5), Some(5))
    );

    // A full replacement: absent fields take their defaults.
    let answer = h
        .call(
            "PUT",
            "/v2/apps/prod/web?partialUpdate=false",
            Some(r#"{"cmd": "sleep 5"}"#),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let app = h.call("GET", "/v2/apps/prod/web", None).await.json()["app"].clone();
    assert_eq!(
        (app["cmd"].as_str(), app["instances"].as_i64()),
        (Some("sleep 5"), Some(1))
    );

    // Rollback to the first version.
    let answer = h
        .call(
            "PUT",
            "/v2/apps/prod/web",
            Some(&json!({ "version": first_version }).to_string()),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let app = h.call("GET", "/v2/apps/prod/web", None).await.json()["app"].clone();
    assert_eq!(app["cmd"], "python3 -m http.server $PORT0");

    // PUT on a new id creates it.
    let answer = h
        .call("PUT", "/v2/apps/prod/api", Some(r#"{"cmd": "sleep 1"}"#))
        .await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert_eq!(answer.header("location"), Some("/v2/apps/prod/api"));

    // A body id that is another app's is refused.
    let answer = h
        .call(
            "PUT",
            "/v2/apps/prod/api",
            Some(r#"{"id": "/prod/web", "cmd": "x"}"#),
        )
        .await;
    assert_eq!(answer.status, 422, "{}", answer.text);

    // Bulk: one deployment for all.
    let before = h.asked().len();
    let answer = h
        .call(
            "PUT",
            "/v2/apps?force=True",
            Some(r#"[{"id": "/prod/web", "instances": 3}, {"id": "/batch", "cmd": "sleep 2"}]"#),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.json()["deploymentId"].is_string());
    assert_eq!(
        h.asked()[before..],
        [Asked::Deploy {
            restart: vec![],
            force: true
        }]
    );
    let snapshot = h.fake.snapshot.borrow().clone();
    assert_eq!(snapshot.root.apps[&id("/prod/web")].instances, 3);
    assert_eq!(
        snapshot.root.apps[&id("/batch")].cmd.as_deref(),
        Some("sleep 2")
    );

    let answer = h
        .call("PATCH", "/v2/apps", Some(r#"[{"instances": 3}]"#))
        .await;
    assert_eq!(answer.status, 422, "an update without id: {}", answer.text);
}

#[tokio::test]
async fn locked_apps_conflict_unless_forced() {
    let h = start().await;
    with_web_app(&h).await;
    h.modify(|s| {
        s.deployments
            .push(deployment_view("d-9", "/prod/web", None))
    });
    let answer = h
        .call("PUT", "/v2/apps/prod/web", Some(r#"{"instances": 1}"#))
        .await;
    assert_eq!(answer.status, 409);
    let body = answer.json();
    assert_eq!(body["deployments"], json!([{"id": "d-9"}]));
    assert!(body["message"].as_str().unwrap().contains("force"));
    let answer = h
        .call(
            "PUT",
            "/v2/apps/prod/web?force=true",
            Some(r#"{"instances": 1}"#),
        )
        .await;
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn delete_and_missing_apps() {
    let h = start().await;
    with_web_app(&h).await;
    let answer = h.call("DELETE", "/v2/apps/prod/web", None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.json()["deploymentId"].is_string());
    for (method, path) in [
        ("GET", "/v2/apps/prod/web"),
        ("DELETE", "/v2/apps/prod/web"),
        ("GET", "/v2/apps/nope/tasks"),
        ("DELETE", "/v2/apps/nope/tasks"),
        ("GET", "/v2/apps/nope/versions"),
        ("POST", "/v2/apps/nope/restart"),
        ("PUT", "/v2/apps/nope/versions"),
    ] {
        let answer = h
            .call(
                method,
                path,
                if method == "PUT" { Some("{}") } else { None },
            )
            .await;
        if method == "PUT" {
            // PUT names the app itself: creating `/nope/versions` without a cmd is invalid.
            assert_eq!(answer.status, 422, "{method} {path}: {}", answer.text);
            continue;
        }
        assert_eq!(answer.status, 404, "{method} {path}: {}", answer.text);
        let message = answer.json()["message"].as_str().unwrap().to_string();
        assert!(message.starts_with("App '/"), "{message}");
    }
    assert_eq!(
        h.call("GET", "/v2/apps/prod/web", None).await.json(),
        json!({"message": "App '/prod/web' does not exist"})
    );
}

#[tokio::test]
async fn suffix_routes_on_ids_with_slashes() {
    let h = start().await;
    with_web_app(&h).await;
    h.modify(|s| {
        s.instances.insert(
            id("/prod/web"),
            Arc::new(vec![
                instance("/prod/web", 1, pb::TaskState::TaskRunning, Some(true), "h1"),
                instance(
                    "/prod/web",
                    2,
                    pb::TaskState::TaskRunning,
                    Some(false),
                    "h2",
                ),
            ]),
        );
    });

    let answer = h
        .call("POST", "/v2/apps/prod/web/restart?force=true", None)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert!(answer.header(DEPLOYMENT_ID_HEADER).is_some());
    assert_eq!(
        h.asked().last(),
        Some(&Asked::Deploy {
            restart: vec![id("/prod/web")],
            force: true
        })
    );

    let tasks = h.call("GET", "/v2/apps/prod/web/tasks", None).await.json();
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 2);

    let answer = h
        .call(
            "DELETE",
            "/v2/apps/prod/web/tasks/prod_web.instance-2._app.1",
            None,
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json()["task"]["id"], "prod_web.instance-2._app.1");
    assert_eq!(
        h.asked().last(),
        Some(&Asked::Kill {
            ids: vec!["prod_web.instance-2._app.1".into()],
            scale: false
        })
    );

    let answer = h
        .call(
            "DELETE",
            "/v2/apps/prod/web/tasks/prod_web.instance-1._app.1?scale=true",
            None,
        )
        .await;
    assert!(answer.json()["deploymentId"].is_string(), "{}", answer.text);

    let answer = h
        .call("DELETE", "/v2/apps/prod/web/tasks/nope._app.1", None)
        .await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.json()["message"],
        "Task 'nope._app.1' does not exist"
    );

    let answer = h
        .call("DELETE", "/v2/apps/prod/web/tasks?host=h1", None)
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["tasks"][0]["host"], "h1");
    assert_eq!(
        h.asked().last(),
        Some(&Asked::Kill {
            ids: vec!["prod_web.instance-1._app.1".into()],
            scale: false
        })
    );
    let answer = h
        .call(
            "DELETE",
            "/v2/apps/prod/web/tasks?scale=true&wipe=true",
            None,
        )
        .await;
    assert_eq!(answer.status, 400);

    // Versions: newest first, each retrievable.
    h.call("PUT", "/v2/apps/prod/web", Some(r#"{"cmd": "sleep 9"}"#))
        .await;
    let versions = h
        .call("GET", "/v2/apps/prod/web/versions", None)
        .await
        .json();
    let versions: Vec<String> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(
        versions.len() >= 2 && versions[0] > versions[1],
        "{versions:?}"
    );
    let old = h
        .call(
            "GET",
            &format!(
                "/v2/apps/prod/web/versions/{}",
                versions[versions.len() - 1]
            ),
            None,
        )
        .await;
    assert_eq!(old.status, 200, "{}", old.text);
    assert_eq!(old.json()["cmd"], "python3 -m http.server $PORT0");
    let answer = h
        .call("GET", "/v2/apps/prod/web/versions/yesterday", None)
        .await;
    assert_eq!(answer.status, 400);
}

#[tokio::test]
async fn groups_show_create_and_delete() {
    let h = start().await;
    with_web_app(&h).await;
    let root = h.call("GET", "/v2/groups", None).await.json();
    assert_eq!(root["id"], "/");
    assert_eq!(root["groups"][0]["id"], "/prod");
    assert_eq!(root["groups"][0]["apps"][0]["id"], "/prod/web");
    let prod = h.call("GET", "/v2/groups/prod", None).await;
    assert_eq!(prod.status, 200);
    assert_eq!(prod.json()["apps"][0]["id"], "/prod/web");
    let with_tasks = h
        .call(
            "GET",
            "/v2/groups/prod?embed=group.apps&embed=group.apps.tasks",
            None,
        )
        .await
        .json();
    assert_eq!(with_tasks["apps"][0]["tasks"], json!([]));

    let body = r#"{"id": "/db", "apps": [{"id": "pg", "cmd": "postgres"}]}"#;
    let answer = h.call("POST", "/v2/groups", Some(body)).await;
    assert_eq!(answer.status, 201, "{}", answer.text);
    assert_eq!(answer.header("location"), Some("/v2/groups/db"));
    assert!(answer.json()["deploymentId"].is_string());
    assert!(
        h.fake
            .snapshot
            .borrow()
            .root
            .apps
            .contains_key(&id("/db/pg"))
    );
    let answer = h.call("POST", "/v2/groups", Some(body)).await;
    assert_eq!(answer.status, 409, "{}", answer.text);

    let answer = h
        .call(
            "PUT",
            "/v2/groups/db",
            Some(r#"{"apps": [{"id": "/db/pg", "cmd": "pg2"}]}"#),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        h.fake.snapshot.borrow().root.apps[&id("/db/pg")]
            .cmd
            .as_deref(),
        Some("pg2")
    );

    let answer = h.call("DELETE", "/v2/groups/db", None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let answer = h.call("GET", "/v2/groups/db", None).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["message"], "Group '/db' does not exist");
    assert_eq!(h.call("DELETE", "/v2/groups/db", None).await.status, 404);
}

#[tokio::test]
async fn queue_in_marathon_shape_with_reason() {
    let h = start().await;
    with_web_app(&h).await;
    h.modify(|s| {
        s.queue.insert(
            id("/prod/web"),
            QueueEntry {
                count: 2,
                delay_seconds_left: 2.5,
                overdue: false,
                since: Timestamp::from_millis(1_700_000_006_000),
                processed_offers: 10,
                unused_offers: 10,
                rejections: BTreeMap::from([
                    ("UnfulfilledConstraint".to_string(), 6),
                    ("InsufficientMemory".to_string(), 4),
                ]),
                reason: Some("no agent has rack:b".into()),
            },
        );
    });
    let queue = h.call("GET", "/v2/queue", None).await.json();
    let item = &queue["queue"][0];
    assert_keys_within(
        item,
        &[
            "app",
            "overdue",
            "count",
            "delay",
            "since",
            "processedOffersSummary",
            "lastUnusedOffers",
        ],
    );
    assert_eq!(item["app"]["id"], "/prod/web");
    assert_keys_within(&item["app"], APP_KEYS);
    assert_eq!(item["count"], 2);
    assert_eq!(
        item["delay"],
        json!({"timeLeftSeconds": 3, "overdue": false})
    );
    assert_eq!(item["since"], "2023-11-14T22:13:26.000Z");
    let summary = &item["processedOffersSummary"];
    assert_eq!(summary["processedOffersCount"], 10);
    assert_eq!(summary["unusedOffersCount"], 10);
    assert_eq!(summary["reason"], "no agent has rack:b");
    let steps = summary["rejectSummaryLastOffers"].as_array().unwrap();
    let step = |reason: &str| {
        steps
            .iter()
            .find(|s| s["reason"] == reason)
            .unwrap()
            .clone()
    };
    assert_eq!(
        step("UnfulfilledRole"),
        json!({"reason": "UnfulfilledRole", "declined": 0, "processed": 10})
    );
    assert_eq!(step("UnfulfilledConstraint")["declined"], 6);
    assert_eq!(step("InsufficientCpus")["processed"], 4);
    assert_eq!(step("InsufficientMemory")["declined"], 4);
    assert_eq!(step("InsufficientDisk")["processed"], 0);

    let answer = h.call("DELETE", "/v2/queue/prod/web/delay", None).await;
    assert_eq!(answer.status, 204);
    assert_eq!(h.asked().last(), Some(&Asked::ResetDelay(id("/prod/web"))));
    let answer = h.call("DELETE", "/v2/queue/other/delay", None).await;
    assert_eq!(answer.status, 404);
    assert!(answer.json()["message"].is_string());
}

#[tokio::test]
async fn tasks_deployments_and_kills() {
    let h = start().await;
    with_web_app(&h).await;
    h.modify(|s| {
        s.instances.insert(
            id("/prod/web"),
            Arc::new(vec![
                instance("/prod/web", 1, pb::TaskState::TaskRunning, None, "h1"),
                instance("/prod/web", 2, pb::TaskState::TaskStaging, None, "h2"),
            ]),
        );
        s.deployments.push(deployment_view(
            "d-1",
            "/prod/web",
            Some("waiting for an offer"),
        ));
    });
    let all = h.call("GET", "/v2/tasks", None).await.json();
    assert_eq!(all["tasks"].as_array().unwrap().len(), 2);
    let running = h.call("GET", "/v2/tasks?status=running", None).await.json();
    assert_eq!(running["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(running["tasks"][0]["state"], "TASK_RUNNING");
    let staging = h
        .call("GET", "/v2/tasks?status[]=staging", None)
        .await
        .json();
    assert_eq!(staging["tasks"][0]["state"], "TASK_STAGING");

    let body = r#"{"ids": ["prod_web.instance-1._app.1"]}"#;
    let answer = h.call("POST", "/v2/tasks/delete", Some(body)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.json()["tasks"][0]["id"],
        "prod_web.instance-1._app.1"
    );
    let answer = h
        .call("POST", "/v2/tasks/delete?scale=True", Some(body))
        .await;
    assert!(answer.json()["deploymentId"].is_string());
    let answer = h
        .call("POST", "/v2/tasks/delete?scale=true&wipe=true", Some(body))
        .await;
    assert_eq!(answer.status, 400);

    // Deployments: Marathon's keys unless Agora's detail is asked for.
    let list = h.call("GET", "/v2/deployments", None).await.json();
    let deployment = &list[0];
    assert_keys_within(
        deployment,
        &[
            "affectedApps",
            "currentActions",
            "currentStep",
            "id",
            "steps",
            "totalSteps",
            "version",
            "affectedPods",
        ],
    );
    assert_eq!(deployment["id"], "d-1");
    assert_eq!(
        deployment["steps"][0]["actions"][0]["action"],
        "ScaleApplication"
    );
    assert_keys_within(
        &deployment["currentActions"][0],
        &[
            "action",
            "app",
            "apps",
            "type",
            "readinessCheckResults",
            "pod",
        ],
    );
    let detailed = h
        .call("GET", "/v2/deployments?embed=waitingFor", None)
        .await
        .json();
    assert_eq!(
        detailed[0]["currentActions"][0]["waitingFor"],
        "waiting for an offer"
    );

    let answer = h.call("DELETE", "/v2/deployments/d-1", None).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(
        answer.header(DEPLOYMENT_ID_HEADER),
        answer.json()["deploymentId"].as_str()
    );
    let answer = h
        .call("DELETE", "/v2/deployments/d-1?force=true", None)
        .await;
    assert_eq!(answer.status, 202);
    assert_eq!(
        h.asked()[h.asked().len() - 2..],
        [
            Asked::Cancel {
                id: "d-1".into(),
                force: false
            },
            Asked::Cancel {
                id: "d-1".into(),
                force: true
            }
        ]
    );
    let answer = h.call("DELETE", "/v2/deployments/nope", None).await;
    assert_eq!(answer.status, 404);
}

#[tokio::test]
async fn events_stream_filters_and_announces() {
    let h = start().await;
    let request = hyper::Request::builder()
        .uri(format!(
            "http://{}/v2/events?event_type=event_stream_attached&event_type=deployment_info",
            h.addr
        ))
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = h.client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = response.into_body();
    let mut seen = String::new();
    async fn read_until(body: &mut hyper::body::Incoming, seen: &mut String, wanted: &str) {
        while !seen.contains(wanted) {
            let frame = body.frame().await.unwrap().unwrap();
            if let Some(data) = frame.data_ref() {
                seen.push_str(&String::from_utf8_lossy(data));
            }
        }
    }
    read_until(&mut body, &mut seen, "\n\n").await;
    assert!(
        seen.starts_with("event: event_stream_attached\ndata: {"),
        "{seen}"
    );
    assert!(
        seen.contains("\"eventType\":\"event_stream_attached\""),
        "{seen}"
    );

    seen.clear();
    h.bus.publish("status_update_event", json!({"taskId": "t"}));
    h.bus
        .publish("deployment_info", json!({"plan": {"id": "d-1"}}));
    read_until(&mut body, &mut seen, "\n\n").await;
    assert!(seen.starts_with("event: deployment_info\ndata: "), "{seen}");
    let data = seen.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let event: Value = serde_json::from_str(data).unwrap();
    assert_eq!(event["eventType"], "deployment_info");
    assert_eq!(event["plan"]["id"], "d-1");
    assert!(!seen.contains("status_update_event"));
}

#[tokio::test]
async fn standby_redirects_to_the_leader_or_answers_503() {
    let h = start().await;
    h.modify(|s| {
        s.is_leader = false;
        s.leader = Some("10.1.2.3:8080".into());
    });
    let answer = h
        .call("GET", "/v2/apps/prod/web?embed=app.tasks", None)
        .await;
    assert_eq!(answer.status, 307);
    assert_eq!(
        answer.header("location"),
        Some("http://10.1.2.3:8080/v2/apps/prod/web?embed=app.tasks")
    );
    assert_eq!(h.call("POST", "/v2/apps", Some("{}")).await.status, 307);
    let ping = h.send("GET", "/ping", None, "*/*").await;
    assert_eq!((ping.status, ping.text.as_str()), (200, "pong"));
    assert_eq!(
        h.call("GET", "/v2/leader", None).await.json(),
        json!({"leader": "10.1.2.3:8080"})
    );
    let info = h.call("GET", "/v2/info", None).await.json();
    assert_eq!(
        (&info["elected"], &info["leader"]),
        (&json!(false), &json!("10.1.2.3:8080"))
    );

    h.modify(|s| s.leader = None);
    let answer = h.call("GET", "/v2/apps", None).await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.json(), json!({"message": "Leader is unknown"}));
    assert_eq!(h.call("GET", "/v2/leader", None).await.status, 404);
    assert!(h.asked().is_empty());
}

#[tokio::test]
async fn info_and_metrics() {
    let h = start().await;
    with_web_app(&h).await;
    h.modify(|s| {
        s.instances.insert(
            id("/prod/web"),
            Arc::new(vec![instance(
                "/prod/web",
                1,
                pb::TaskState::TaskRunning,
                Some(true),
                "h1",
            )]),
        );
    });
    let info = h.call("GET", "/v2/info", None).await.json();
    assert_keys_within(
        &info,
        &[
            "event_subscriber",
            "framework_id",
            "frameworkId",
            "http_config",
            "leader",
            "marathon_config",
            "name",
            "version",
            "elected",
            "zookeeper_config",
            "buildref",
        ],
    );
    assert_eq!(info["frameworkId"], "framework-1");
    assert_eq!(info["elected"], true);
    assert_eq!(info["leader"], h.addr.to_string());
    assert_eq!(info["http_config"]["http_port"], h.addr.port());
    assert_eq!(info["marathon_config"]["master"], "127.0.0.1:5050");
    assert_eq!(h.call("DELETE", "/v2/leader", None).await.status, 501);

    let text = h.send("GET", "/metrics", None, "text/plain").await;
    assert_eq!(text.status, 200);
    for line in [
        "agora_apps_apps 1",
        "agora_apps_instances_running 1",
        "agora_apps_deployments 0",
        "agora_apps_tasks{state=\"TASK_RUNNING\"} 1",
    ] {
        assert!(text.text.contains(line), "{line} in {}", text.text);
    }
    let json = h.call("GET", "/metrics", None).await.json();
    assert_eq!(json["gauges"]["instances.running"]["value"], 1);
}
