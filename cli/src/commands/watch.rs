//! `spillway get events` and `--watch`: the coordinator's event feed, listed, or followed over
//! server-sent events (resuming from the last id after the stream ends).

use std::time::Duration;

use spillway_api::events::{FeedEvent, FeedKind, MISSED};

use super::output::{Format, print, since, table};
use crate::client::Client;

/// Most bytes one event may take on the stream (a line longer than this is not the feed).
const MAX_EVENT: usize = 64 * 1024;

const HEADER: [&str; 8] = [
    "ID",
    "AGE",
    "KIND",
    "NAME",
    "REASON",
    "+NODE",
    "+FUNCTION",
    "MESSAGE",
];

fn row(e: &FeedEvent) -> Vec<String> {
    let name = match e.kind {
        // Job ids are long; 12 hex digits are unique enough to read, `describe` takes a prefix.
        FeedKind::Job => e.name.chars().take(12).collect(),
        FeedKind::Node => e.name.clone(),
    };
    vec![
        e.id.to_string(),
        since(e.at_ms),
        e.kind.as_str().to_owned(),
        name,
        e.reason.clone(),
        e.node.clone().unwrap_or_default(),
        e.function.clone().unwrap_or_default(),
        e.message.clone(),
    ]
}

fn path(kind: Option<FeedKind>, after: u64, stream: bool) -> String {
    let mut p = format!(
        "/v1/events{}?after={after}",
        if stream { "/stream" } else { "" }
    );
    if let Some(k) = kind {
        p.push_str(&format!("&kind={}", k.as_str()));
    }
    p
}

/// `spillway get events [--kind job|node]`: what the coordinator keeps (the last 10,000).
pub async fn list(client: &Client, format: Format, kind: Option<FeedKind>) -> anyhow::Result<u64> {
    let events: Vec<FeedEvent> = client.get(&path(kind, 0, false)).await?;
    print(format, &events, &HEADER, || {
        events.iter().map(row).collect()
    })?;
    Ok(events.last().map_or(0, |e| e.id))
}

/// Follows the feed from `after`, printing each event (`-o json`: one object per line) until
/// interrupted. A stream that ends is opened again from the last id seen.
pub async fn follow(
    client: &Client,
    format: Format,
    kind: Option<FeedKind>,
    mut after: u64,
) -> anyhow::Result<()> {
    let mut header_shown = false;
    let mut failures = 0u32;
    loop {
        let response = match client.open_stream(&path(kind, after, true)).await {
            Ok(r) => {
                failures = 0;
                r
            }
            Err(e) if failures < 5 => {
                failures += 1;
                eprintln!("watch: {e}; trying again");
                tokio::time::sleep(Duration::from_secs(u64::from(failures))).await;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut events = SseReader::new(response);
        while let Some(done) = events.next().await? {
            if done.name.as_deref() == Some(MISSED) {
                eprintln!(
                    "watch: some events were missed (the coordinator keeps the last 10,000, or this client fell behind); `spillway get events` lists what it has"
                );
                continue;
            }
            let Ok(e) = serde_json::from_str::<FeedEvent>(&done.data) else {
                continue;
            };
            after = after.max(e.id);
            match format {
                Format::Json | Format::JsonPath => println!("{}", serde_json::to_string(&e)?),
                Format::Yaml => print!("---\n{}", serde_saphyr::to_string(&e)?),
                Format::Name => println!("{}", e.name),
                Format::Table | Format::Wide => {
                    let t = table(format, &HEADER, vec![row(&e)]);
                    // The header once, then rows.
                    let text = if header_shown {
                        t.lines().skip(1).collect::<Vec<_>>().join("\n")
                    } else {
                        t
                    };
                    header_shown = true;
                    println!("{text}");
                }
            }
        }
    }
}

/// Reads server-sent events off a response as they come.
struct SseReader {
    response: reqwest_tls::Response,
    buffer: Vec<u8>,
}

impl SseReader {
    fn new(response: reqwest_tls::Response) -> Self {
        Self {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next whole event; `None` when the stream ends.
    async fn next(&mut self) -> anyhow::Result<Option<SseEvent>> {
        let mut event = SseEvent::default();
        loop {
            while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    if event.name.is_some() || !event.data.is_empty() {
                        return Ok(Some(event));
                    }
                    continue;
                }
                event.line(line);
            }
            if self.buffer.len() > MAX_EVENT {
                anyhow::bail!("watch: the coordinator sent a line over {MAX_EVENT} bytes");
            }
            match self.response.chunk().await? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

/// One server-sent event being read: its `event:` name and `data:` lines.
#[derive(Debug, Default)]
struct SseEvent {
    name: Option<String>,
    data: String,
}

impl SseEvent {
    fn line(&mut self, line: &str) {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.name = Some(value.to_owned()),
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
            _ => {}
        }
    }
}

/// The feed's last id now, for a wait that must not miss what comes next; `None` when the
/// caller may not read the feed (an invoker's token) or the coordinator has none.
pub async fn position(client: &Client) -> Option<u64> {
    let events: Vec<FeedEvent> = client
        .get(&path(Some(FeedKind::Job), 0, false))
        .await
        .ok()?;
    Some(events.last().map_or(0, |e| e.id))
}

/// Waits on the feed, from `after`, until job `id` is reported finished; `false` when the
/// stream cannot be had (the caller polls instead) or `deadline` passes.
pub async fn until_finished(
    client: &Client,
    id: &str,
    after: u64,
    deadline: tokio::time::Instant,
) -> bool {
    let wait = async {
        let Ok(response) = client
            .open_stream(&path(Some(FeedKind::Job), after, true))
            .await
        else {
            return false;
        };
        let mut events = SseReader::new(response);
        while let Ok(Some(done)) = events.next().await {
            if done.name.as_deref() == Some(MISSED) {
                return false;
            }
            if let Ok(e) = serde_json::from_str::<FeedEvent>(&done.data)
                && e.ends_job(id)
            {
                return true;
            }
        }
        false
    };
    tokio::time::timeout_at(deadline, wait)
        .await
        .unwrap_or(false)
}
