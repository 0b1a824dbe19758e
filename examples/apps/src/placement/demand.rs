//! [`Demand`]: what one app asks of the offers in one placement pass.

use crate::model::{AppDefinition, PathId};

use super::constraint::Constraint;
use super::offer::to_fixed;

/// Instances of one app to place, and what each needs. Scalars are in thousandths.
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    pub app: PathId,
    /// Instances wanted; ignored for daemon apps.
    pub count: u32,
    /// One instance on every offered agent that satisfies the constraints and runs
    /// none yet.
    pub daemon: bool,
    pub cpus: i64,
    pub mem: i64,
    pub disk: i64,
    pub gpus: i64,
    /// The instance's host ports in order (`$PORT0`, `$PORT1`, ...): `Some(port)` for
    /// a fixed one (`requirePorts`, a port mapping's `hostPort`), `None` for any free
    /// port of the offer. Fixed ports are distinct.
    pub host_ports: Vec<Option<u64>>,
    pub constraints: Vec<Constraint>,
    /// Roles whose resources may be used (`*`: unreserved); `None` accepts all.
    pub accepted_roles: Option<Vec<String>>,
    /// The role the app's tasks run as; offers allocated to another role are
    /// refused. `None` accepts any offer.
    pub role: Option<String>,
}

impl Demand {
    /// What `count` more instances of `app` need. Fails on what validation should
    /// already have refused (negative resources, bad constraints, duplicate fixed
    /// ports), with a sentence naming the field.
    pub fn from_app(app: &AppDefinition, count: u32) -> Result<Demand, String> {
        let scalar = |name: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(to_fixed(value))
            } else {
                Err(format!(
                    "{name} must be a number of at least 0, not {value}"
                ))
            }
        };
        if app.gpus < 0 {
            return Err(format!("gpus must be at least 0, not {}", app.gpus));
        }
        let constraints = app
            .constraints
            .iter()
            .enumerate()
            .map(|(i, c)| Constraint::parse(c).map_err(|e| format!("constraints[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let host_ports = host_ports(app)?;
        let mut fixed: Vec<u64> = host_ports.iter().flatten().copied().collect();
        fixed.sort_unstable();
        if let Some(pair) = fixed.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("host port {} is asked for twice", pair[0]));
        }
        Ok(Demand {
            app: app.id.clone(),
            count,
            daemon: app.is_daemon(),
            cpus: scalar("cpus", app.cpus)?,
            mem: scalar("mem", app.mem)?,
            disk: scalar("disk", app.disk)?,
            gpus: app.gpus.saturating_mul(1000),
            host_ports,
            constraints,
            accepted_roles: app.accepted_resource_roles.clone(),
            role: app.role.clone().filter(|r| !r.is_empty()),
        })
    }

    /// Ports taken from any free range.
    pub fn any_port_count(&self) -> u64 {
        self.host_ports.iter().filter(|p| p.is_none()).count() as u64
    }

    /// True when resources reserved to (or unreserved, for `*`) `role` may be used.
    pub fn accepts_role(&self, role: &str) -> bool {
        self.accepted_roles
            .as_ref()
            .is_none_or(|roles| roles.iter().any(|r| r == role))
    }
}

/// Marathon's host ports: a container's port mappings when it has them (a mapping
/// without `hostPort` takes none, `hostPort: 0` any), otherwise the port definitions
/// (absent: one port), each fixed only with `requirePorts`.
fn host_ports(app: &AppDefinition) -> Result<Vec<Option<u64>>, String> {
    let port = |value: i64, what: &str| -> Result<Option<u64>, String> {
        match value {
            0 => Ok(None),
            1..=65535 => Ok(Some(value as u64)),
            _ => Err(format!("{what} {value} is not a port (0 to 65535)")),
        }
    };
    if let Some(mappings) = app
        .container
        .as_ref()
        .and_then(|c| c.port_mappings.as_ref())
    {
        return mappings
            .iter()
            .filter_map(|m| m.host_port)
            .map(|p| port(p, "hostPort"))
            .collect();
    }
    match &app.port_definitions {
        None => Ok(vec![None]),
        Some(definitions) => definitions
            .iter()
            .map(|d| {
                let p = port(d.port, "port")?;
                Ok(if app.require_ports { p } else { None })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(json: &str) -> AppDefinition {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reads_resources_ports_and_constraints() {
        let d = Demand::from_app(
            &app(r#"{"id":"/web","cpus":0.5,"mem":64,"disk":10,"gpus":1,
                "constraints":[["hostname","UNIQUE"]],
                "acceptedResourceRoles":["*"],"role":"prod"}"#),
            3,
        )
        .unwrap();
        assert_eq!(d.count, 3);
        assert_eq!((d.cpus, d.mem, d.disk, d.gpus), (500, 64_000, 10_000, 1000));
        assert_eq!(d.host_ports, vec![None], "no port definitions: one port");
        assert_eq!(d.constraints[0].describe(), r#"["hostname","UNIQUE"]"#);
        assert!(d.accepts_role("*"));
        assert!(!d.accepts_role("prod"));
        assert_eq!(d.role.as_deref(), Some("prod"));
    }

    #[test]
    fn fixed_ports_only_with_require_ports_or_host_ports() {
        let loose = app(r#"{"id":"/a","portDefinitions":[{"port":8080},{"port":0}]}"#);
        assert_eq!(
            Demand::from_app(&loose, 1).unwrap().host_ports,
            vec![None, None]
        );
        let strict =
            app(r#"{"id":"/a","requirePorts":true,"portDefinitions":[{"port":8080},{"port":0}]}"#);
        assert_eq!(
            Demand::from_app(&strict, 1).unwrap().host_ports,
            vec![Some(8080), None]
        );
        let none = app(r#"{"id":"/a","portDefinitions":[]}"#);
        assert!(Demand::from_app(&none, 1).unwrap().host_ports.is_empty());
        let mapped = app(
            r#"{"id":"/a","container":{"docker":{"image":"x"},"portMappings":[
                {"containerPort":80,"hostPort":0},{"containerPort":81,"hostPort":9000},
                {"containerPort":82}]}}"#,
        );
        assert_eq!(
            Demand::from_app(&mapped, 1).unwrap().host_ports,
            vec![None, Some(9000)]
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = Demand::from_app(
            &app(r#"{"id":"/a","constraints":[["hostname","UNIQUE"],["rack","NEAR"]]}"#),
            1,
        )
        .unwrap_err();
        assert!(
            err.starts_with("constraints[1]: unknown constraint operator"),
            "{err}"
        );
        let err = Demand::from_app(&app(r#"{"id":"/a","cpus":-1}"#), 1).unwrap_err();
        assert!(err.contains("cpus must be"), "{err}");
        let err = Demand::from_app(
            &app(r#"{"id":"/a","requirePorts":true,"portDefinitions":[{"port":80},{"port":80}]}"#),
            1,
        )
        .unwrap_err();
        assert!(err.contains("host port 80 is asked for twice"), "{err}");
        let err = Demand::from_app(
            &app(r#"{"id":"/a","requirePorts":true,"portDefinitions":[{"port":70000}]}"#),
            1,
        )
        .unwrap_err();
        assert!(err.contains("70000 is not a port"), "{err}");
    }
}
