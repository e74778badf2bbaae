//! The MQTT front door: every client connects here (plain TCP or TLS), proves who it is, and
//! has each packet checked against its grants before it reaches the embedded broker, which
//! listens on loopback only and takes nobody but the gateway (an internal login).
//!
//! rumqttd has no topic ACLs and trusts client ids, so the gateway parses what clients send
//! (rumqttc's MQTT 3.1.1 codec) and forwards the checked bytes unchanged; the broker's answers
//! are copied back, except SUBACKs of subscriptions it trimmed, which get the refused filters'
//! failure codes back. Refused publishes close the connection (MQTT 3.1.1 has no negative
//! PUBACK), refused subscriptions get failure code 0x80, as Mosquitto does.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Login, Packet, Publish, SubAck, Subscribe,
    SubscribeReasonCode, Unsubscribe,
};
use rumqttc::mqttbytes::{self, FixedHeader, PacketType, Protocol};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::acl::{Grants, Principal, RetainedQuota};

/// How long a client has to finish TLS and send CONNECT.
const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// CONNECT carries an id, a login and a will: this is plenty.
const MAX_CONNECT: usize = 64 << 10;
/// How often a connection checks whether its grants changed.
const REVIEW_EVERY: Duration = Duration::from_secs(2);

/// What the gateway asks of the coordinator.
pub trait Authority: Send + Sync + 'static {
    /// Changes whenever any grant may have changed (functions, labels, nodes, users).
    fn generation(&self) -> u64;
    /// The node holding the certificate with this SHA-256 fingerprint.
    fn node_by_cert(&self, fingerprint: &[u8; 32]) -> Option<String>;
    /// Whether `password` is MQTT user `name`'s.
    fn user_login(&self, name: &str, password: &str) -> bool;
    /// What `who` may do now (`None`: it no longer exists).
    fn grants(&self, who: &Principal) -> Option<Grants>;
    /// Counts a refusal by reason (for `/metrics`).
    fn refused(&self, reason: &'static str);
}

/// The gateway's settings and shared bookkeeping.
#[derive(Debug)]
pub struct Gateway {
    /// The embedded broker (loopback) and the login only the gateway knows.
    pub broker: SocketAddr,
    pub broker_login: (String, String),
    pub max_payload: usize,
    pub connections: Arc<tokio::sync::Semaphore>,
    pub retained: Mutex<RetainedQuota>,
    /// The filters each broker session holds, so that a revoked grant can be taken back from
    /// a persistent session (in memory, like the broker's sessions).
    sessions: Mutex<HashMap<String, BTreeSet<String>>>,
    next_anonymous: std::sync::atomic::AtomicU64,
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error, displaydoc::Display)]
enum End {
    /// {0}
    Io(#[from] std::io::Error),
    /// malformed MQTT: {0:?}
    Malformed(mqttbytes::Error),
    /// a packet of {0} bytes is over the broker's limit ([mqtt] max_payload)
    TooLarge(usize),
    /// no CONNECT within {0:?}
    Slow(Duration),
    /// refused: {0}
    Refused(String),
}

impl Gateway {
    pub fn new(
        broker: SocketAddr,
        broker_login: (String, String),
        max_payload: usize,
        max_connections: usize,
        retained: RetainedQuota,
    ) -> Self {
        Self {
            broker,
            broker_login,
            max_payload,
            connections: Arc::new(tokio::sync::Semaphore::new(max_connections)),
            retained: Mutex::new(retained),
            sessions: Mutex::default(),
            next_anonymous: Default::default(),
        }
    }

    /// Accepts connections on `listener` forever; with `tls`, each starts with a handshake.
    pub async fn serve<A: Authority>(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        authority: Arc<A>,
    ) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("MQTT accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                authority.refused("connection_limit");
                continue;
            };
            let (gateway, authority, tls) = (self.clone(), authority.clone(), tls.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _ = stream.set_nodelay(true);
                let result = match tls {
                    None => gateway.session(stream, None, &*authority).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(CONNECT_DEADLINE, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls)) => {
                                let cert = tls
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .map(|c| spillway_link::identity::fingerprint(c.as_ref()));
                                gateway.session(tls, cert, &*authority).await
                            }
                            Ok(Err(e)) => Err(End::Io(e)),
                            Err(_) => Err(End::Slow(CONNECT_DEADLINE)),
                        }
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, "MQTT connection ended: {e}");
                }
            });
        }
    }

    async fn session<S, A>(&self, io: S, cert: Option<[u8; 32]>, authority: &A) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
        A: Authority,
    {
        let (mut client_rd, mut client_wr) = tokio::io::split(io);
        let mut frames = Frames::new(MAX_CONNECT);
        let first = tokio::time::timeout(CONNECT_DEADLINE, frames.next(&mut client_rd))
            .await
            .map_err(|_| End::Slow(CONNECT_DEADLINE))??;
        let Some((header, raw)) = first else {
            return Ok(());
        };
        if header.packet_type().map_err(End::Malformed)? != PacketType::Connect {
            return Err(End::Refused("the first packet must be CONNECT".into()));
        }
        let mut connect = Connect::read(header, raw).map_err(End::Malformed)?;
        let who = match self.admit(&mut connect, cert, authority) {
            Ok(who) => who,
            Err((code, why)) => {
                authority.refused(why);
                write_packet(&mut client_wr, Packet::ConnAck(ConnAck::new(code, false))).await?;
                return Err(End::Refused(why.into()));
            }
        };
        let mut grants = authority
            .grants(&who)
            .ok_or_else(|| End::Refused(format!("{} is gone", who.describe())))?;
        if let Some(will) = &connect.last_will
            && let Err(why) =
                self.check_publish(&grants, &will.topic, will.retain, will.message.len())
        {
            authority.refused(why);
            write_packet(
                &mut client_wr,
                Packet::ConnAck(ConnAck::new(ConnectReturnCode::NotAuthorized, false)),
            )
            .await?;
            return Err(End::Refused(format!("last will: {why}")));
        }
        let session = connect.client_id.clone();
        self.take_back(&session, &grants).await;
        if connect.clean_session {
            self.forget(&session);
        }
        let mut generation = authority.generation();
        let broker = match TcpStream::connect(self.broker).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(
                    "the embedded MQTT broker does not answer on {}: {e}",
                    self.broker
                );
                write_packet(
                    &mut client_wr,
                    Packet::ConnAck(ConnAck::new(ConnectReturnCode::ServiceUnavailable, false)),
                )
                .await?;
                return Err(End::Refused("the embedded broker is down".into()));
            }
        };
        let _ = broker.set_nodelay(true);
        let (mut broker_rd, mut broker_wr) = broker.into_split();
        write_packet(&mut broker_wr, Packet::Connect(connect)).await?;
        tracing::debug!("MQTT: {} connected as session {session}", who.describe());

        // Subscriptions trimmed of refused filters: the positions to fail in the broker's SUBACK.
        let trimmed: Mutex<HashMap<u16, Vec<bool>>> = Mutex::default();
        let (inject, mut injected) = mpsc::channel::<Bytes>(8);
        let mut frames = Frames::new(self.max_payload.saturating_add(MAX_CONNECT));
        let upstream = async {
            let mut review = tokio::time::interval(REVIEW_EVERY);
            loop {
                let next = tokio::select! {
                    next = frames.next(&mut client_rd) => next?,
                    _ = review.tick() => {
                        self.review(authority, &who, &session, &mut generation, &mut grants)?;
                        continue;
                    }
                };
                let Some((header, raw)) = next else {
                    return Ok(());
                };
                // A deployment may have changed this node's topics just before it subscribes.
                self.review(authority, &who, &session, &mut generation, &mut grants)?;
                match read_client(header, raw.clone()).map_err(End::Malformed)? {
                    ClientPacket::Publish(p) => {
                        if let Err(why) =
                            self.check_publish(&grants, &p.topic, p.retain, p.payload.len())
                        {
                            authority.refused(why);
                            return Err(End::Refused(format!(
                                "{} may not publish to `{}`: {why}",
                                who.describe(),
                                p.topic
                            )));
                        }
                        broker_wr.write_all(&raw).await?;
                    }
                    ClientPacket::Subscribe(s) => {
                        let allowed: Vec<bool> = s
                            .filters
                            .iter()
                            .map(|f| grants.may_subscribe(&f.path))
                            .collect();
                        let kept: Vec<_> = s
                            .filters
                            .iter()
                            .zip(&allowed)
                            .filter(|(_, ok)| **ok)
                            .map(|(f, _)| f.clone())
                            .collect();
                        if kept.len() < s.filters.len() {
                            authority.refused("subscribe_denied");
                            tracing::warn!(
                                "MQTT: {} may not subscribe to {:?}",
                                who.describe(),
                                s.filters
                                    .iter()
                                    .zip(&allowed)
                                    .filter(|(_, ok)| !**ok)
                                    .map(|(f, _)| f.path.as_str())
                                    .collect::<Vec<_>>()
                            );
                        }
                        self.remember(&session, kept.iter().map(|f| f.path.clone()));
                        if kept.is_empty() {
                            let codes = vec![SubscribeReasonCode::Failure; s.filters.len()];
                            let _ = inject
                                .send(encode(Packet::SubAck(SubAck::new(s.pkid, codes)))?)
                                .await;
                        } else if kept.len() < s.filters.len() {
                            lock(&trimmed).insert(s.pkid, allowed);
                            let mut narrowed = Subscribe::new_many(kept);
                            narrowed.pkid = s.pkid;
                            write_packet(&mut broker_wr, Packet::Subscribe(narrowed)).await?;
                        } else {
                            broker_wr.write_all(&raw).await?;
                        }
                    }
                    ClientPacket::Unsubscribe(u) => {
                        self.drop_filters(&session, &u.topics);
                        broker_wr.write_all(&raw).await?;
                    }
                    ClientPacket::Connect(_) => {
                        return Err(End::Refused("a second CONNECT".into()));
                    }
                    ClientPacket::Disconnect => {
                        broker_wr.write_all(&raw).await?;
                        return Ok(());
                    }
                    ClientPacket::Other => broker_wr.write_all(&raw).await?,
                }
            }
        };
        let downstream = async {
            // The broker is ours: its packets are framed, not judged (up to MQTT's maximum).
            let mut frames = Frames::new(268_435_455);
            loop {
                tokio::select! {
                    next = frames.next(&mut broker_rd) => {
                        let Some((header, raw)) = next? else { return Ok::<(), End>(()) };
                        let raw = if header.packet_type().ok() == Some(PacketType::SubAck) {
                            widen_suback(&trimmed, header, raw)?
                        } else {
                            raw
                        };
                        client_wr.write_all(&raw).await?;
                    }
                    Some(frame) = injected.recv() => client_wr.write_all(&frame).await?,
                }
            }
        };
        let result = tokio::select! {
            r = upstream => r,
            r = downstream => r,
        };
        if let Err(End::TooLarge(_)) = &result {
            authority.refused("too_large");
        }
        if let Err(End::Refused(_)) = &result {
            // Take back what is no longer granted from the session the broker keeps.
            self.take_back(&session, &grants).await;
        }
        result
    }

    /// Who a CONNECT proves to be; rewrites its client id to the principal's session name and
    /// its login to the gateway's.
    fn admit<A: Authority>(
        &self,
        connect: &mut Connect,
        cert: Option<[u8; 32]>,
        authority: &A,
    ) -> Result<Principal, (ConnectReturnCode, &'static str)> {
        if connect.protocol != Protocol::V4 {
            return Err((
                ConnectReturnCode::RefusedProtocolVersion,
                "protocol_version",
            ));
        }
        let who = match (cert, &connect.login) {
            (Some(fp), _) => match authority.node_by_cert(&fp) {
                Some(node) => Principal::Node(node),
                None => return Err((ConnectReturnCode::NotAuthorized, "unknown_certificate")),
            },
            (None, Some(Login { username, password })) => {
                if authority.user_login(username, password) {
                    Principal::User(username.clone())
                } else {
                    return Err((ConnectReturnCode::BadUserNamePassword, "bad_login"));
                }
            }
            (None, None) => {
                if authority.grants(&Principal::Anonymous).is_some() {
                    Principal::Anonymous
                } else {
                    return Err((ConnectReturnCode::NotAuthorized, "anonymous"));
                }
            }
        };
        if connect.client_id.is_empty() {
            if !connect.clean_session {
                return Err((ConnectReturnCode::BadClientId, "client_id"));
            }
            let n = self
                .next_anonymous
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            connect.client_id = format!("~{n}");
        }
        connect.client_id = who.session(&connect.client_id);
        connect.login = Some(Login::new(
            self.broker_login.0.clone(),
            self.broker_login.1.clone(),
        ));
        Ok(who)
    }

    /// Looks again at `who`'s grants if anything changed since `generation`: gone, or holding
    /// a subscription no longer granted, ends the connection.
    fn review<A: Authority>(
        &self,
        authority: &A,
        who: &Principal,
        session: &str,
        generation: &mut u64,
        grants: &mut Grants,
    ) -> Result<(), End> {
        let now = authority.generation();
        if now == *generation {
            return Ok(());
        }
        *generation = now;
        *grants = authority
            .grants(who)
            .ok_or_else(|| End::Refused(format!("{} was removed", who.describe())))?;
        if self.revoked(session, grants) {
            return Err(End::Refused(format!(
                "the grants of {} changed",
                who.describe()
            )));
        }
        Ok(())
    }

    fn check_publish(
        &self,
        grants: &Grants,
        topic: &str,
        retain: bool,
        bytes: usize,
    ) -> Result<(), &'static str> {
        if bytes > self.max_payload {
            return Err("too_large");
        }
        if !grants.may_publish(topic) {
            return Err("publish_denied");
        }
        if retain {
            lock(&self.retained)
                .admit(topic, bytes)
                .map_err(|e| match e {
                    super::acl::RetainRefusal::TooLarge { .. } => "retained_too_large",
                    super::acl::RetainRefusal::TooMany { .. } => "retained_quota",
                })?;
        }
        Ok(())
    }

    fn remember(&self, session: &str, filters: impl Iterator<Item = String>) {
        lock(&self.sessions)
            .entry(session.to_owned())
            .or_default()
            .extend(filters);
    }

    fn drop_filters(&self, session: &str, filters: &[String]) {
        if let Some(held) = lock(&self.sessions).get_mut(session) {
            for f in filters {
                held.remove(f);
            }
        }
    }

    fn forget(&self, session: &str) {
        lock(&self.sessions).remove(session);
    }

    /// Whether `session` holds a filter `grants` no longer cover.
    fn revoked(&self, session: &str, grants: &Grants) -> bool {
        lock(&self.sessions)
            .get(session)
            .is_some_and(|held| held.iter().any(|f| !grants.may_subscribe(f)))
    }

    /// Unsubscribes `session` at the broker from the filters `grants` no longer cover, as the
    /// gateway's own short connection under that session (the client is not connected).
    async fn take_back(&self, session: &str, grants: &Grants) {
        let revoked: Vec<String> = match lock(&self.sessions).get_mut(session) {
            Some(held) => {
                let gone: Vec<String> = held
                    .iter()
                    .filter(|f| !grants.may_subscribe(f))
                    .cloned()
                    .collect();
                for f in &gone {
                    held.remove(f);
                }
                gone
            }
            None => return,
        };
        if revoked.is_empty() {
            return;
        }
        tracing::info!("MQTT: session {session} loses its subscriptions to {revoked:?}");
        if let Err(e) = self.unsubscribe_session(session, revoked).await {
            tracing::warn!("MQTT: cannot take back subscriptions of session {session}: {e}");
        }
    }

    async fn unsubscribe_session(&self, session: &str, filters: Vec<String>) -> Result<(), End> {
        let broker = TcpStream::connect(self.broker).await?;
        let (mut rd, mut wr) = broker.into_split();
        let mut connect = Connect::new(session);
        connect.clean_session = false;
        connect.keep_alive = 10;
        connect.login = Some(Login::new(
            self.broker_login.0.clone(),
            self.broker_login.1.clone(),
        ));
        write_packet(&mut wr, Packet::Connect(connect)).await?;
        let mut unsubscribe = Unsubscribe::new(String::new());
        unsubscribe.topics = filters;
        unsubscribe.pkid = 1;
        write_packet(&mut wr, Packet::Unsubscribe(unsubscribe)).await?;
        let mut frames = Frames::new(268_435_455);
        let done = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some((header, _)) = frames.next(&mut rd).await? {
                if header.packet_type().ok() == Some(PacketType::UnsubAck) {
                    return Ok::<(), End>(());
                }
            }
            Ok(())
        })
        .await;
        write_packet(&mut wr, Packet::Disconnect).await?;
        done.map_err(|_| End::Slow(Duration::from_secs(5)))?
    }
}

/// A client's packet as the gateway reads it.
#[derive(Debug)]
pub enum ClientPacket {
    Connect(Box<Connect>),
    Publish(Publish),
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Disconnect,
    /// Acknowledgements and pings: passed on as they are.
    Other,
}

/// Decodes what the gateway judges in a client's packet (sans-IO: the fuzz target's entry).
pub fn read_client(header: FixedHeader, raw: Bytes) -> Result<ClientPacket, mqttbytes::Error> {
    Ok(match header.packet_type()? {
        PacketType::Connect => ClientPacket::Connect(Box::new(Connect::read(header, raw)?)),
        PacketType::Publish => ClientPacket::Publish(Publish::read(header, raw)?),
        PacketType::Subscribe => ClientPacket::Subscribe(Subscribe::read(header, raw)?),
        PacketType::Unsubscribe => ClientPacket::Unsubscribe(Unsubscribe::read(header, raw)?),
        PacketType::Disconnect => ClientPacket::Disconnect,
        _ => ClientPacket::Other,
    })
}

/// The next whole packet in `buf` (at most `max` bytes after its fixed header), split off.
pub fn frame(
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<(FixedHeader, Bytes)>, mqttbytes::Error> {
    match mqttbytes::check(buf.iter(), max) {
        Ok(header) => Ok(Some((header, buf.split_to(header.frame_length()).freeze()))),
        Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Puts the failure codes of refused filters back into the broker's SUBACK of a trimmed
/// subscription.
fn widen_suback(
    trimmed: &Mutex<HashMap<u16, Vec<bool>>>,
    header: FixedHeader,
    raw: Bytes,
) -> Result<Bytes, End> {
    let ack = SubAck::read(header, raw.clone()).map_err(End::Malformed)?;
    let Some(allowed) = lock(trimmed).remove(&ack.pkid) else {
        return Ok(raw);
    };
    let mut granted = ack.return_codes.into_iter();
    let codes = allowed
        .iter()
        .map(|ok| match ok {
            true => granted.next().unwrap_or(SubscribeReasonCode::Failure),
            false => SubscribeReasonCode::Failure,
        })
        .collect();
    encode(Packet::SubAck(SubAck::new(ack.pkid, codes)))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn encode(packet: Packet) -> Result<Bytes, End> {
    let mut out = BytesMut::new();
    packet.write(&mut out, usize::MAX).map_err(End::Malformed)?;
    Ok(out.freeze())
}

async fn write_packet(w: &mut (impl AsyncWrite + Unpin), packet: Packet) -> Result<(), End> {
    let bytes = encode(packet)?;
    w.write_all(&bytes).await?;
    Ok(())
}

/// Whole MQTT packets out of a byte stream, each at most `max` bytes after its fixed header.
struct Frames {
    buf: BytesMut,
    max: usize,
}

impl Frames {
    fn new(max: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(4096),
            max,
        }
    }

    /// The next packet's header and bytes (fixed header included); `None` at a clean end.
    async fn next(
        &mut self,
        r: &mut (impl AsyncRead + Unpin),
    ) -> Result<Option<(FixedHeader, Bytes)>, End> {
        loop {
            match frame(&mut self.buf, self.max) {
                Ok(Some(packet)) => return Ok(Some(packet)),
                Ok(None) => {}
                Err(mqttbytes::Error::PayloadSizeLimitExceeded(n)) => return Err(End::TooLarge(n)),
                Err(e) => return Err(End::Malformed(e)),
            }
            // Cancellation-safe: read_buf appends to our buffer or reads nothing.
            if r.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(End::Io(std::io::ErrorKind::UnexpectedEof.into()))
                };
            }
        }
    }
}
