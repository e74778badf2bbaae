//! The CLI's connection to a coordinator: where it is and the API token (flags, environment, or
//! a client config file the coordinator writes), and typed calls to its HTTP API.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use spillway_api::ErrorBody;

use crate::contexts::{ConfigFile, Settings};

#[derive(Debug, thiserror::Error, displaydoc::Display)]
pub enum ClientError {
    /// cannot reach the coordinator at {url}: {message}. Is it running (`spillway up` or `spillway serve`)? Point at it with --coordinator URL or in {config}
    Unreachable {
        url: String,
        message: String,
        config: String,
    },
    /// {0}
    Api(String),
    /// the coordinator answered {status}: {message}
    Status { status: u16, message: String },
    /// unexpected answer from the coordinator: {0}
    Decode(String),
    /// client config {path}: {message}
    Config { path: PathBuf, message: String },
}

/// `$SPILLWAY_CONFIG`, else `$XDG_CONFIG_HOME/spillway/config.toml`, else `~/.config/…`.
pub fn default_config_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SPILLWAY_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("spillway").join("config.toml"))
}

/// Where the packaged coordinator (`spillway serve` under its unit, state in its
/// StateDirectory) writes its client config. Root on the coordinator's host uses it when it has
/// no config of its own, so `sudo spillway get nodes` works there after `apt install`.
pub const SERVICE_CLIENT_CONFIG: &str = "/var/lib/spillway-coordinator/client.toml";

/// The config a command reads: `--config`, else `$SPILLWAY_CONFIG`, else the user's own if it
/// exists, else the packaged coordinator's if readable, else (for messages) the user's path.
fn config_to_read(flag: Option<PathBuf>) -> Option<PathBuf> {
    if flag.is_some() || std::env::var_os("SPILLWAY_CONFIG").is_some() {
        return flag.or_else(default_config_path);
    }
    let own = default_config_path();
    if own.as_deref().is_some_and(Path::exists) {
        return own;
    }
    let service = Path::new(SERVICE_CLIENT_CONFIG);
    if std::fs::File::open(service).is_ok() {
        return Some(service.to_owned());
    }
    own
}

/// What `spillway up` did with the user's client config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// There was none, or one `spillway up` wrote: it is the coordinator's now.
    Wrote(PathBuf),
    /// The user's own: the coordinator became one of its contexts, made current; `previous`
    /// was current before.
    AddedContext { path: PathBuf, previous: String },
    /// It could not be read or written as a client config; it was left as it was.
    LeftAlone(PathBuf, String),
}

/// Puts the coordinator's client config `text` where the CLI reads it: written whole when the
/// user has no config (or one Spillway wrote), else added to theirs as the context `context`
/// (made current) when one is given, never overwriting what they wrote themselves.
pub fn install_client_config(text: &str, context: Option<&str>) -> Option<Installed> {
    let path = default_config_path()?;
    let existing = match std::fs::read_to_string(&path) {
        Ok(t) if !t.starts_with(spillway_api::WRITTEN_BY_MARKER) => t,
        _ => {
            std::fs::create_dir_all(path.parent()?).ok()?;
            return Some(match write_private(&path, text) {
                Ok(()) => Installed::Wrote(path),
                Err(e) => Installed::LeftAlone(path, e.to_string()),
            });
        }
    };
    let Some(context) = context else {
        return Some(Installed::LeftAlone(path, "it is your own".into()));
    };
    let added = ConfigFile::parse(text).and_then(|ours| {
        let theirs = ConfigFile::parse(&existing)?;
        let updated = crate::contexts::set_context(&existing, context, &ours.flat())?;
        let updated = crate::contexts::use_context(&updated, context)?;
        write_private(&path, &updated).map_err(|e| e.to_string())?;
        Ok(theirs.current())
    });
    Some(match added {
        Ok(previous) => Installed::AddedContext { path, previous },
        Err(why) => Installed::LeftAlone(path, why),
    })
}

/// Writes a file only its owner may read (client configs hold the API token), whole: under a
/// temporary name first, so an older world-readable file is replaced, not rewritten in place.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut f, text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// An HTTP(S) client that trusts only `ca` when given (pinned), the system's roots otherwise.
fn http_client(ca: Option<&[u8]>, config: &str) -> Result<reqwest_tls::Client, ClientError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let bad = |message: String| ClientError::Config {
        path: PathBuf::from(config),
        message,
    };
    let certs = match ca {
        Some(pem) => reqwest_tls::Certificate::from_pem_bundle(pem)
            .map_err(|e| bad(format!("ca: not PEM certificates: {e}")))?,
        None => std::fs::read("/etc/ssl/certs/ca-certificates.crt")
            .ok()
            .and_then(|pem| reqwest_tls::Certificate::from_pem_bundle(&pem).ok())
            .unwrap_or_default(),
    };
    reqwest_tls::Client::builder()
        .tls_certs_only(certs)
        .build()
        .map_err(|e| bad(format!("cannot set up HTTPS: {e}")))
}

#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest_tls::Client,
    base: String,
    token: Option<String>,
    config_path: String,
    /// The client config file read, if one was.
    config_file: Option<PathBuf>,
    /// The named context in use (`None`: the file's flat keys).
    context: Option<String>,
}

impl Client {
    /// Flags win over the environment, which wins over the config file; `context` (from
    /// `--context` or `$SPILLWAY_CONTEXT`) picks one of the file's contexts.
    pub fn resolve(
        url: Option<String>,
        token: Option<String>,
        config: Option<PathBuf>,
        context: Option<String>,
    ) -> Result<Self, ClientError> {
        let path = config_to_read(config);
        let (context, file) = match &path {
            Some(p) if p.exists() => read_config(p, context.as_deref())?,
            _ if context.is_some() => {
                return Err(ClientError::Config {
                    path: path.unwrap_or_default(),
                    message: "there is no client config to pick a context from".into(),
                });
            }
            _ => (None, Settings::default()),
        };
        let base = url
            .or(file.coordinator)
            .unwrap_or_else(|| "http://127.0.0.1:7480".into())
            .trim_end_matches('/')
            .to_owned();
        let config_path = path
            .as_ref()
            .map_or("~/.config/spillway/config.toml".into(), |p| {
                p.display().to_string()
            });
        let ca = match (file.ca, file.ca_file) {
            (Some(pem), _) => Some(pem.into_bytes()),
            (None, Some(f)) => {
                let f = path
                    .as_deref()
                    .and_then(Path::parent)
                    .map_or(f.clone(), |dir| dir.join(&f));
                Some(std::fs::read(&f).map_err(|e| ClientError::Config {
                    path: f.clone(),
                    message: format!("ca_file: {e}"),
                })?)
            }
            (None, None) => None,
        };
        Ok(Self {
            http: http_client(ca.as_deref(), &config_path)?,
            base,
            token: token.or(file.token),
            config_path,
            config_file: path.filter(|p| p.exists()),
            context,
        })
    }

    /// After a CA rotation or retirement: puts `pem` (the CAs the coordinator trusts now) where
    /// this client's config keeps its CA (`ca`, or the file `ca_file` names), written whole.
    /// `None` when the config names no CA (plain HTTP, or the system's roots).
    pub fn update_trusted_cas(&self, pem: &str) -> Result<Option<PathBuf>, ClientError> {
        let Some(path) = &self.config_file else {
            return Ok(None);
        };
        if path == Path::new(SERVICE_CLIENT_CONFIG) {
            // The coordinator's own file, which it writes as its service user at each start.
            return Ok(None);
        }
        let failed = |message: String| ClientError::Config {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
        let (_, file) = ConfigFile::parse(&text)
            .and_then(|f| f.select(self.context.as_deref()))
            .map_err(failed)?;
        match (&file.ca, &file.ca_file) {
            (Some(_), _) => {
                if pem.contains("'''") || !pem.is_ascii() {
                    return Err(failed("the CA bundle is not plain PEM".into()));
                }
                let updated = crate::contexts::replace_ca(&text, self.context.as_deref(), pem)
                    .map_err(failed)?;
                write_private(path, &updated).map_err(|e| failed(e.to_string()))?;
                Ok(Some(path.clone()))
            }
            (None, Some(f)) => {
                let f = path.parent().map_or(f.clone(), |dir| dir.join(f));
                spillway_plumbing::atomic::write_whole(&f, pem.as_bytes(), 0o644).map_err(|e| {
                    ClientError::Config {
                        path: f.clone(),
                        message: format!("ca_file: {e}"),
                    }
                })?;
                Ok(Some(f))
            }
            (None, None) => Ok(None),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest_tls::Method, path: &str) -> reqwest_tls::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        r
    }

    /// `GET path` whose body is read as it comes (a server-sent event stream), with no time
    /// limit on the whole.
    pub async fn open_stream(&self, path: &str) -> Result<reqwest_tls::Response, ClientError> {
        let req = self
            .request(reqwest_tls::Method::GET, path)
            .header("accept", "text/event-stream");
        self.send(req).await
    }

    async fn send(
        &self,
        req: reqwest_tls::RequestBuilder,
    ) -> Result<reqwest_tls::Response, ClientError> {
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
            config: self.config_path.clone(),
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => Err(ClientError::Api(body.error)),
            Err(_) => Err(ClientError::Status {
                status,
                message: text,
            }),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self
            .send(self.request(reqwest_tls::Method::GET, path))
            .await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let resp = self
            .send(self.request(reqwest_tls::Method::GET, path))
            .await?;
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(reqwest_tls::Method::POST, path, body).await
    }

    pub async fn put_json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.json(reqwest_tls::Method::PUT, path, body).await
    }

    async fn json<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest_tls::Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        let req = self
            .request(method, path)
            .header(reqwest_tls::header::CONTENT_TYPE, "application/json")
            .body(body);
        let resp = self.send(req).await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    pub async fn send_bytes<T: DeserializeOwned>(
        &self,
        method: reqwest_tls::Method,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<T, ClientError> {
        let resp = self.send(self.request(method, path).body(bytes)).await?;
        resp.json()
            .await
            .map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Posts `body` as JSON and writes the answer's bytes to `out` as they arrive; returns how
    /// many. An answer cut off midway is an error, never a short file taken for whole.
    pub async fn post_to_writer<B: serde::Serialize>(
        &self,
        path: &str,
        body: &B,
        out: &mut impl std::io::Write,
    ) -> Result<u64, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        let req = self
            .request(reqwest_tls::Method::POST, path)
            .header(reqwest_tls::header::CONTENT_TYPE, "application/json")
            .body(body);
        let mut resp = self.send(req).await?;
        let mut written = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            ClientError::Decode(format!("the answer was cut off after {written} bytes: {e}"))
        })? {
            out.write_all(&chunk)
                .map_err(|e| ClientError::Decode(format!("cannot write what arrived: {e}")))?;
            written += chunk.len() as u64;
        }
        Ok(written)
    }

    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        self.send(self.request(reqwest_tls::Method::DELETE, path))
            .await?;
        Ok(())
    }
}

/// The settings of the context to use in the config at `path`, and its name (`None`: the
/// flat keys).
fn read_config(
    path: &Path,
    context: Option<&str>,
) -> Result<(Option<String>, Settings), ClientError> {
    let err = |message: String| ClientError::Config {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    ConfigFile::parse(&text)
        .and_then(|f| f.select(context))
        .map_err(err)
}

/// Percent-encodes one URL path segment (node names are DNS names; file paths keep `/`).
pub fn encode_path(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
