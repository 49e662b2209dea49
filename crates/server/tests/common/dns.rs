//! A DNS server for discovery tests: one zone ("test."), built record by record, optionally
//! signed (DNSSEC, ECDSA P-256, NSEC), served by hickory-server in the test process over UDP and
//! TCP on a loopback port. The zone's key is written as a trust anchor file for the server under
//! test; [`TestZone::serve_with_foreign_anchor`] writes another key instead, so that every
//! answer fails validation (bogus).
//!
//! Included with `#[path]` by the tests that need it, so that the other test binaries do not
//! link hickory-server.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::dnssec::crypto::EcdsaSigningKey;
use hickory_proto::dnssec::rdata::DNSKEY;
use hickory_proto::dnssec::{Algorithm, DnssecSigner, SigningKey};
use hickory_proto::rr::rdata::{A, NS, SOA, SRV, TLSA};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use hickory_server::dnssec::NxProofKind;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use tokio::net::{TcpListener, UdpSocket};

use crate::common::temp_dir;

const ORIGIN: &str = "test.";
const SERIAL: u32 = 1;

/// The records of the zone, before it is served.
pub struct TestZone {
    records: Vec<Record>,
}

/// A running DNS server; it stops when dropped.
pub struct DnsServer {
    /// UDP and TCP, same port.
    pub addr: SocketAddr,
    /// A file of DNSKEY records for `[federation] dnssec_trust_anchors`.
    pub anchors: PathBuf,
    _server: Server<Catalog>,
}

fn name(n: &str) -> Name {
    let n = if n.ends_with('.') {
        n.to_owned()
    } else {
        format!("{n}.")
    };
    Name::from_ascii(n).unwrap()
}

impl TestZone {
    pub fn new() -> TestZone {
        let soa = SOA::new(
            name("ns.test"),
            name("hostmaster.test"),
            SERIAL,
            3600,
            600,
            86_400,
            60,
        );
        let mut zone = TestZone {
            records: Vec::new(),
        };
        zone.add(ORIGIN, RData::SOA(soa));
        zone.add(ORIGIN, RData::NS(NS(name("ns.test"))));
        zone.add("ns.test", RData::A(A::new(127, 0, 0, 1)));
        zone
    }

    fn add(&mut self, owner: &str, data: RData) -> &mut Self {
        self.records.push(Record::from_rdata(name(owner), 60, data));
        self
    }

    /// `_service._tcp.domain SRV priority weight port target`.
    pub fn srv(
        &mut self,
        service: &str,
        domain: &str,
        priority: u16,
        port: u16,
        target: &str,
    ) -> &mut Self {
        let owner = format!("{service}._tcp.{domain}");
        self.add(
            &owner,
            RData::SRV(SRV::new(priority, 0, port, name(target))),
        )
    }

    /// An A or AAAA record.
    pub fn addr(&mut self, host: &str, ip: IpAddr) -> &mut Self {
        let data = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(v6.into()),
        };
        self.add(host, data)
    }

    /// `_port._tcp.host TLSA usage selector matching data`.
    pub fn tlsa(
        &mut self,
        host: &str,
        port: u16,
        (usage, selector, matching): (u8, u8, u8),
        data: Vec<u8>,
    ) -> &mut Self {
        let owner = format!("_{port}._tcp.{host}");
        let tlsa = TLSA::new(usage.into(), selector.into(), matching.into(), data);
        self.add(&owner, RData::TLSA(tlsa))
    }

    /// Serves the zone unsigned.
    pub async fn serve(&self) -> DnsServer {
        self.start(None).await
    }

    /// Signs the zone and serves it; `anchors` holds its key.
    pub async fn serve_signed(&self) -> DnsServer {
        let key = new_key();
        let anchor = anchor_line(&key);
        self.start(Some((key, anchor))).await
    }

    /// Signs the zone but writes another key to `anchors`: a validating resolver given that
    /// file finds every answer bogus.
    pub async fn serve_with_foreign_anchor(&self) -> DnsServer {
        let anchor = anchor_line(&new_key());
        self.start(Some((new_key(), anchor))).await
    }

    async fn start(&self, signing: Option<(EcdsaSigningKey, String)>) -> DnsServer {
        let origin = name(ORIGIN);
        let nx = Some(NxProofKind::Nsec);
        let mut handler = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
            nx,
        );
        for r in &self.records {
            assert!(handler.upsert_mut(r.clone(), SERIAL), "{r}");
        }
        let anchors = temp_dir("dns").join("anchors.txt");
        let mut anchor_text = String::new();
        if let Some((key, anchor)) = signing {
            let dnskey = DNSKEY::from_key(&key.to_public_key().unwrap());
            let signer = DnssecSigner::new(
                dnskey,
                Box::new(key),
                origin.clone(),
                Duration::from_secs(3_600),
            );
            handler.add_zone_signing_key_mut(signer).unwrap();
            handler.secure_zone_mut().unwrap();
            anchor_text = anchor;
        }
        std::fs::write(&anchors, anchor_text).unwrap();
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(handler)]);
        let mut server = Server::new(catalog);
        // UDP and TCP on one port: bind UDP first, then TCP on its port (retried if taken).
        for _ in 0..20 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            let Ok(tcp) = TcpListener::bind(addr).await else {
                continue;
            };
            server.register_socket(udp);
            server.register_listener(tcp, Duration::from_secs(5), 65_535);
            return DnsServer {
                addr,
                anchors,
                _server: server,
            };
        }
        panic!("no loopback port free for UDP and TCP");
    }
}

fn new_key() -> EcdsaSigningKey {
    let alg = Algorithm::ECDSAP256SHA256;
    EcdsaSigningKey::from_pkcs8(&EcdsaSigningKey::generate_pkcs8(alg).unwrap(), alg).unwrap()
}

/// The key as a trust anchor line: `test. 3600 IN DNSKEY 257 3 13 <base64>`.
fn anchor_line(key: &EcdsaSigningKey) -> String {
    let dnskey = DNSKEY::from_key(&key.to_public_key().unwrap());
    format!("{ORIGIN} 3600 IN DNSKEY {dnskey}\n")
}
