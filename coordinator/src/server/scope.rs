//! Who may do what through the API (sans-IO): the scope a token carries, what each route needs,
//! and whether one allows the other. The admin token (in the coordinator's client config) may do
//! everything; scoped tokens made with `spillway api-token create` carry less:
//!
//! - `operator`: read everything, apply and delete functions, put files on nodes, invoke;
//! - `invoker`: invoke the functions it names (`/v1/functions/F/invoke`, `/job/F`, `/run/F`) and
//!   read those jobs;
//! - `webhook`: deliver bucket notifications to `/events`, nothing else.
//!
//! Node identity (join tokens, labels, removing nodes) and API tokens stay with the admin.

use axum::http::Method;
use spillway_api::tokens::Scope;

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Node identity and API tokens.
    Admin,
    /// Changing what runs where: apply, delete, files into a node's folders.
    Operate,
    /// Reading the fleet: nodes, functions, jobs, logs, files, the OSCAR API.
    Read,
    /// Reading one job (an invoker reads the jobs it made).
    ReadJob,
    /// Running one function.
    Invoke(String),
    /// Delivering a bucket notification.
    Event,
}

/// What `method path` needs (paths as the router has them, without the query).
pub fn need(method: &Method, path: &str) -> Need {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (_, ["v1", "tokens", ..] | ["v1", "api-tokens", ..] | ["v1", "mqtt", "users", ..]) => {
            Need::Admin
        }
        // A backup holds the CA's key and every token.
        (_, ["v1", "admin", ..]) => Need::Admin,
        (&Method::DELETE, ["v1", "nodes", _]) => Need::Admin,
        (_, ["v1", "nodes", _, "labels"]) => Need::Admin,
        (&Method::POST, ["v1", "apply"]) => Need::Operate,
        // Maintenance: taking a node out of placement and back.
        (&Method::PUT, ["v1", "nodes", _, "cordon"]) => Need::Operate,
        (&Method::DELETE, ["v1", "functions", _]) => Need::Operate,
        (&Method::PUT, ["v1", "nodes", _, "files", ..]) => Need::Operate,
        // OSCAR's service management and job deletion: what `spillway apply` and `delete` do.
        (&Method::POST | &Method::PUT, ["system", "services"]) => Need::Operate,
        (&Method::DELETE, ["system", "services", _]) => Need::Operate,
        (&Method::DELETE, ["system", "logs", ..]) => Need::Operate,
        (&Method::POST, ["v1", "functions", f, "invoke" | "run"]) => Need::Invoke((*f).to_owned()),
        (&Method::POST, ["job" | "run", f]) => Need::Invoke((*f).to_owned()),
        (&Method::POST, ["events"]) => Need::Event,
        (&Method::GET, ["v1", "jobs", _] | ["v1", "jobs", _, "log"]) => Need::ReadJob,
        (&Method::GET, _) => Need::Read,
        // Anything else that is not read-only changes something: the admin's.
        _ => Need::Admin,
    }
}

/// Whether `scope` may do what `need` asks.
pub fn allows(scope: &Scope, need: &Need) -> bool {
    match (scope, need) {
        (Scope::Admin, _) => true,
        (Scope::Operator, Need::Admin) => false,
        (Scope::Operator, _) => true,
        (Scope::Invoker { functions }, Need::Invoke(f)) => functions.iter().any(|g| g == f),
        (Scope::Invoker { .. }, Need::ReadJob) => true,
        (Scope::Webhook, Need::Event) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scope_reaches_only_its_routes() {
        let invoker = Scope::Invoker {
            functions: vec!["detect".into()],
        };
        let cases = [
            (Method::POST, "/v1/tokens", [true, false, false, false]),
            (
                Method::PUT,
                "/v1/nodes/pi-1/labels",
                [true, false, false, false],
            ),
            (
                Method::DELETE,
                "/v1/nodes/pi-1",
                [true, false, false, false],
            ),
            (Method::POST, "/v1/api-tokens", [true, false, false, false]),
            // A backup holds the CA's key: not even a read for others.
            (
                Method::POST,
                "/v1/admin/backup",
                [true, false, false, false],
            ),
            (Method::GET, "/v1/admin/backup", [true, false, false, false]),
            // An agent binary runs as root on every node it reaches.
            (
                Method::PUT,
                "/v1/releases/1.2.0",
                [true, false, false, false],
            ),
            (Method::POST, "/v1/upgrades", [true, false, false, false]),
            // Rotating the mesh CA is the admin's; its certificates are for operators to see.
            (
                Method::POST,
                "/v1/admin/ca/rotate",
                [true, false, false, false],
            ),
            (
                Method::POST,
                "/v1/admin/ca/retire",
                [true, false, false, false],
            ),
            (Method::GET, "/v1/ca", [true, true, false, false]),
            (
                Method::POST,
                "/v1/upgrades/3/cancel",
                [true, false, false, false],
            ),
            (Method::GET, "/v1/upgrades", [true, true, false, false]),
            (Method::POST, "/v1/apply", [true, true, false, false]),
            (
                Method::DELETE,
                "/v1/functions/detect",
                [true, true, false, false],
            ),
            (
                Method::PUT,
                "/v1/nodes/pi-1/files/a/b",
                [true, true, false, false],
            ),
            (Method::GET, "/v1/nodes", [true, true, false, false]),
            (Method::GET, "/system/services", [true, true, false, false]),
            (
                Method::GET,
                "/v1/nodes/pi-1/files/a/b",
                [true, true, false, false],
            ),
            (Method::GET, "/v1/jobs/0123", [true, true, true, false]),
            (Method::POST, "/job/detect", [true, true, true, false]),
            (Method::POST, "/run/detect", [true, true, true, false]),
            (
                Method::POST,
                "/v1/functions/detect/invoke",
                [true, true, true, false],
            ),
            (Method::POST, "/run/other", [true, true, false, false]),
            (Method::POST, "/events", [true, true, false, true]),
        ];
        let scopes = [Scope::Admin, Scope::Operator, invoker, Scope::Webhook];
        for (method, path, expected) in cases {
            let need = need(&method, path);
            for (scope, want) in scopes.iter().zip(expected) {
                assert_eq!(
                    allows(scope, &need),
                    want,
                    "{} {method} {path}",
                    scope.describe()
                );
            }
        }
    }

    #[test]
    fn scopes_are_parsed_with_what_they_need() {
        assert_eq!(Scope::parse("operator", vec![]), Ok(Scope::Operator));
        assert!(Scope::parse("invoker", vec![]).is_err());
        assert!(Scope::parse("webhook", vec!["f".into()]).is_err());
        assert!(
            Scope::parse("admin", vec![])
                .unwrap_err()
                .contains("operator token")
        );
        assert!(Scope::parse("root", vec![]).is_err());
    }
}
