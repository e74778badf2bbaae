//! CA rotation as TLS sees it: real rustls handshakes in memory between a [`LiveServer`] and
//! member clients, across rotate (new CA, cross-signed by the old one) and retire.

use std::sync::{Arc, Mutex};

use rustls::pki_types::ServerName;
use spillway_proto::wire::COORDINATOR_SERVER_NAME;

use super::{Clients, LiveServer};
use crate::bundle::join;
use crate::test_ca::ca;
use crate::tls::{stream_member, verifies_coordinator};

/// A member client that trusts `bundle` and presents `identity`.
fn member(bundle: Vec<u8>, identity: (Vec<u8>, Vec<u8>)) -> Arc<rustls::ClientConfig> {
    let config = stream_member(
        Box::new(move || Some(bundle.clone())),
        Box::new(move || Some(identity.clone())),
    )
    .unwrap();
    Arc::new(config)
}

/// A whole TLS handshake in memory; the first error either side raises.
fn handshake(
    client: Arc<rustls::ClientConfig>,
    server: &Arc<LiveServer>,
) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(COORDINATOR_SERVER_NAME).unwrap();
    let mut c = rustls::ClientConnection::new(client, name)?;
    let mut s = rustls::ServerConnection::new(Arc::new(server.config().unwrap()))?;
    for _ in 0..8 {
        let mut flight = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut flight).unwrap();
        }
        let mut rest = flight.as_slice();
        while !rest.is_empty() {
            s.read_tls(&mut rest).unwrap();
            s.process_new_packets()?;
        }
        let mut flight = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut flight).unwrap();
        }
        let mut rest = flight.as_slice();
        while !rest.is_empty() {
            c.read_tls(&mut rest).unwrap();
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    Err(rustls::Error::General(
        "the handshake did not finish".into(),
    ))
}

#[test]
fn a_member_that_trusts_only_the_old_ca_verifies_the_new_chain_through_the_cross_certificate() {
    let (old, new) = (ca("mesh CA"), ca("mesh CA 2"));
    let cross = old.cross_sign(&new);
    let (leaf, _) = new.server();
    let rotating = [leaf.clone(), new.der.clone(), cross, old.der.clone()];
    verifies_coordinator(&old.der, &rotating).expect("old CA through the cross certificate");
    verifies_coordinator(&new.der, &rotating).expect("new CA directly");
    // Retired: without the cross certificate, only the new CA verifies the chain.
    let retired = [leaf, new.der.clone()];
    verifies_coordinator(&join(&[&new.der, &old.der]), &retired).expect("the new bundle");
    let err = verifies_coordinator(&old.der, &retired).expect_err("old CA alone");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[test]
fn a_live_server_takes_new_cas_and_a_new_chain_at_the_next_handshake() {
    let (old, new) = (ca("mesh CA"), ca("mesh CA 2"));
    let cross = old.cross_sign(&new);
    let (old_member, new_member) = (old.member(), new.member());
    let (leaf, key) = old.server();
    let server = LiveServer::new(
        Clients::Optional,
        &old.der,
        vec![leaf, old.der.clone()],
        key,
    )
    .unwrap();
    let before = member(old.der.clone(), old_member.clone());
    handshake(before.clone(), &server).expect("before the rotation");

    // Rotated: the new CA signs, both are trusted, the chain leads to either.
    let both = join(&[&new.der, &old.der]);
    let (leaf, key) = new.server();
    let chain = vec![leaf, new.der.clone(), cross, old.der.clone()];
    server.update(&both, chain, key).unwrap();
    handshake(before.clone(), &server).expect("a member that has not heard of the rotation");
    handshake(member(both.clone(), old_member.clone()), &server).expect("old certificate");
    handshake(member(both.clone(), new_member.clone()), &server).expect("renewed");

    // Retired: the old CA is gone from both sides.
    let (leaf, key) = new.server();
    server
        .update(&new.der, vec![leaf, new.der.clone()], key)
        .unwrap();
    handshake(member(both.clone(), new_member.clone()), &server).expect("rotated member");
    let err = handshake(before, &server).expect_err("a member that trusts only the old CA");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    let err = handshake(member(both, old_member), &server).expect_err("old certificate");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[test]
fn a_long_lived_member_client_follows_the_cas_it_trusts_at_each_handshake() {
    let (old, new) = (ca("mesh CA"), ca("mesh CA 2"));
    let trusted = Arc::new(Mutex::new(old.der.clone()));
    let seen = trusted.clone();
    let identity = new.member();
    let client = Arc::new(
        stream_member(
            Box::new(move || seen.lock().ok().map(|b| b.clone())),
            Box::new(move || Some(identity.clone())),
        )
        .unwrap(),
    );
    let (leaf, key) = new.server();
    let server = LiveServer::new(
        Clients::Optional,
        &new.der,
        vec![leaf, new.der.clone()],
        key,
    )
    .unwrap();
    assert!(handshake(client.clone(), &server).is_err());
    *trusted.lock().unwrap() = join(&[&new.der, &old.der]);
    handshake(client, &server).expect("the bundle stored since");
}
