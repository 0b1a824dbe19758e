//! From a request body to a canonical [`AppDefinition`], as Marathon's
//! `AppNormalization` does it: deprecated fields translated (`ports`, `uris`,
//! `container.docker.network`, `container.docker.portMappings`), ids made absolute,
//! Marathon's default ports filled in, framework-owned fields (`version`,
//! `versionInfo`) dropped.

use serde_json::{Map, Value, json};

use super::app::{Container, PortDefinition, PortMapping};
use super::{AppDefinition, ModelError, PathId, ValidationErrors, json};

/// Archive suffixes Marathon's fetcher extracts by default (`FetchUri.isExtract`).
const EXTRACTABLE: [&str; 7] = [
    ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz", ".zip",
];

/// How an app's tasks are networked, from its `networks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// Ports are `portDefinitions` (the default).
    Host,
    /// `container/bridge`: ports are `container.portMappings`, a missing host port is 0.
    Bridge,
    /// `container`: ports are `container.portMappings`, host ports only where given.
    Container,
}

impl AppDefinition {
    /// Parses, normalises and validates a request body; `base` is the group relative
    /// ids are resolved in. Not JSON: [`ModelError::InvalidJson`] (400); a value of
    /// the wrong shape or an invalid app: [`ModelError::Invalid`] (422).
    pub fn from_json(body: &[u8], base: &PathId) -> Result<AppDefinition, ModelError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ModelError::InvalidJson(e.to_string()))?;
        Self::from_value(value, base)
    }

    /// [`AppDefinition::from_json`] for an already parsed body.
    pub fn from_value(value: Value, base: &PathId) -> Result<AppDefinition, ModelError> {
        let app = Self::normalized(value, base)?;
        app.validate()?;
        Ok(app)
    }

    /// Parses and normalises without validating (the caller validates, possibly
    /// after merging with an existing definition).
    pub(crate) fn normalized(
        value: Value,
        base: &PathId,
    ) -> Result<AppDefinition, ValidationErrors> {
        let Value::Object(mut object) = value else {
            return Err(shape_error("/", "error.expected.jsobject"));
        };
        translate_deprecated(&mut object)?;
        // An id that does not resolve stays as given, for `validate` to name it.
        if let Some(Value::String(raw)) = object.get("id")
            && let Ok(id) = PathId::parse_relative(raw, base)
        {
            object.insert("id".into(), Value::String(id.to_string()));
        }
        object.remove("version");
        object.remove("versionInfo");
        let mut app: AppDefinition = json::from_value(&Value::Object(object))?;
        app.normalize();
        Ok(app)
    }

    /// The networking mode its `networks` ask for (the first non-host network wins).
    pub fn network_mode(&self) -> NetworkMode {
        self.networks
            .iter()
            .filter_map(|n| n.get("mode").and_then(Value::as_str))
            .find_map(|mode| match mode {
                "container/bridge" => Some(NetworkMode::Bridge),
                "container" => Some(NetworkMode::Container),
                _ => None,
            })
            .unwrap_or(NetworkMode::Host)
    }

    /// How many ports each task has: its port mappings, or else its port definitions.
    pub fn port_count(&self) -> usize {
        self.port_names().len()
    }

    /// Each port's name, in port order (what `portIndex` and `$PORT<n>` count).
    pub fn port_names(&self) -> Vec<Option<String>> {
        match self.port_mappings() {
            Some(mappings) => mappings.iter().map(|m| m.name.clone()).collect(),
            None => self
                .port_definitions
                .iter()
                .flatten()
                .map(|d| d.name.clone())
                .collect(),
        }
    }

    /// The container's port mappings when it has any (they then define the ports).
    pub fn port_mappings(&self) -> Option<&[PortMapping]> {
        self.container
            .as_ref()
            .and_then(|c| c.port_mappings.as_deref())
            .filter(|m| !m.is_empty())
    }

    /// The app as `/v2/apps` renders it.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Marathon's canonical form (`AppNormalization.forDeprecated` and
    /// `forPostValidation`), on an app that has its fields already.
    fn normalize(&mut self) {
        if self.networks.is_empty() {
            self.networks = vec![json!({"mode": "host"})];
        }
        let mode = self.network_mode();
        if mode == NetworkMode::Host {
            // Marathon's one default port; port mappings mean nothing on the host network.
            if self.port_definitions.is_none() {
                self.port_definitions = Some(vec![PortDefinition {
                    port: 0,
                    protocol: "tcp".into(),
                    name: Some("default".into()),
                    labels: Default::default(),
                }]);
            }
            if let Some(container) = &mut self.container {
                container.port_mappings = None;
            }
        } else {
            self.port_definitions = None;
            self.require_ports = false;
            let container = self.container.get_or_insert_with(|| Container {
                kind: "MESOS".into(),
                docker: None,
                volumes: Vec::new(),
                port_mappings: None,
            });
            let mappings = container.port_mappings.get_or_insert_with(Vec::new);
            if mappings.is_empty() {
                mappings.push(PortMapping {
                    container_port: 0,
                    host_port: None,
                    service_port: 0,
                    protocol: "tcp".into(),
                    name: Some("default".into()),
                    labels: Default::default(),
                });
            }
            if mode == NetworkMode::Bridge {
                for mapping in mappings.iter_mut() {
                    mapping.host_port.get_or_insert(0);
                }
            }
        }
        if self.port_count() > 0 {
            for check in &mut self.health_checks {
                if check.protocol != "COMMAND" && check.port.is_none() && check.port_index.is_none()
                {
                    check.port_index = Some(0);
                }
            }
        }
        for check in &mut self.readiness_checks {
            if check.http_status_codes_for_ready.is_empty() {
                check.http_status_codes_for_ready = vec![200];
            }
        }
        let group = self.id.parent();
        for dependency in &mut self.dependencies {
            if let Ok(id) = PathId::parse_relative(dependency, &group) {
                *dependency = id.to_string();
            }
        }
        self.version = None;
        self.version_info = None;
    }
}

/// Deprecated request fields into their canonical form, on the raw object (the
/// typed model has no place for them).
fn translate_deprecated(object: &mut Map<String, Value>) -> Result<(), ValidationErrors> {
    match (object.remove("ports"), object.get("portDefinitions")) {
        (Some(Value::Array(ports)), None) => {
            let definitions = ports
                .into_iter()
                .map(|port| json!({ "port": port }))
                .collect();
            object.insert("portDefinitions".into(), Value::Array(definitions));
        }
        (Some(Value::Array(ports)), Some(Value::Array(definitions))) => {
            let same = ports.len() == definitions.len()
                && ports
                    .iter()
                    .zip(definitions)
                    .all(|(port, definition)| definition.get("port").unwrap_or(&json!(0)) == port);
            if !same {
                return Err(ValidationErrors::one(
                    "/",
                    "cannot specify both ports and port definitions",
                ));
            }
        }
        (Some(Value::Null) | None, _) => {}
        (Some(_), _) => {
            return Err(shape_error("/ports", "error.expected.jsarray"));
        }
    }
    match object.remove("uris") {
        Some(Value::Array(uris)) if !uris.is_empty() => {
            let fetch_given = object
                .get("fetch")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
            if fetch_given {
                return Err(ValidationErrors::one(
                    "/uris",
                    "may not be set in conjunction with fetch",
                ));
            }
            let mut fetch = Vec::with_capacity(uris.len());
            for (index, uri) in uris.into_iter().enumerate() {
                let Value::String(uri) = uri else {
                    return Err(shape_error(
                        &format!("/uris({index})"),
                        "error.expected.jsstring",
                    ));
                };
                let extract = EXTRACTABLE.iter().any(|suffix| uri.ends_with(suffix));
                fetch.push(json!({ "uri": uri, "extract": extract }));
            }
            object.insert("fetch".into(), Value::Array(fetch));
        }
        Some(Value::Array(_) | Value::Null) | None => {}
        Some(_) => return Err(shape_error("/uris", "error.expected.jsarray")),
    }
    let Some(Value::Object(container)) = object.get_mut("container") else {
        return Ok(());
    };
    let Some(Value::Object(docker)) = container.get_mut("docker") else {
        return Ok(());
    };
    let docker_mappings = docker.remove("portMappings");
    let docker_network = docker.remove("network");
    if let Some(Value::Array(mappings)) = docker_mappings
        && !mappings.is_empty()
    {
        let given = container
            .get("portMappings")
            .and_then(Value::as_array)
            .is_some_and(|m| !m.is_empty());
        if given {
            return Err(ValidationErrors::one(
                "/container",
                "cannot specify both portMappings and docker.portMappings",
            ));
        }
        container.insert("portMappings".into(), Value::Array(mappings));
    }
    if let Some(Value::String(network)) = docker_network {
        let mode = match network.as_str() {
            "BRIDGE" => "container/bridge",
            "USER" => "container",
            _ => "host",
        };
        let networks_given = object
            .get("networks")
            .and_then(Value::as_array)
            .is_some_and(|n| !n.is_empty());
        if networks_given {
            return Err(ValidationErrors::one(
                "/",
                "must not specify both container.docker.network and networks",
            ));
        }
        object.insert("networks".into(), json!([{ "mode": mode }]));
    }
    Ok(())
}

fn shape_error(path: &str, code: &str) -> ValidationErrors {
    ValidationErrors {
        message: "Invalid JSON".to_string(),
        ..ValidationErrors::one(path, code)
    }
}
