//! A small authoritative DNS server for tests: UDP and TCP on the same 127.0.0.1 port, answering
//! TXT and MX from a zone the test can change while it runs. Messages are encoded and decoded
//! with hickory-proto (the same wire code the resolver under test uses); answers too large for
//! the client's UDP payload are truncated, so the resolver retries over TCP as in real life.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dkim_relay::dns::{Record as ZoneRecord, RecordData};
use mail_auth::hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use mail_auth::hickory_resolver::proto::rr::rdata::{MX, TXT};
use mail_auth::hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

#[derive(Default)]
pub struct Zone {
    txt: HashMap<String, Vec<String>>,
    mx: HashMap<String, Vec<(u16, String)>>,
}

use dkim_relay::domain_name::dns_name as norm;

impl Zone {
    pub fn from_records(records: &[ZoneRecord]) -> Zone {
        let mut z = Zone::default();
        for r in records {
            match &r.data {
                RecordData::Txt(v) => z.add_txt(&r.name, v),
                RecordData::Mx {
                    preference,
                    exchange,
                } => z.add_mx(&r.name, *preference, exchange),
            }
        }
        z
    }
    pub fn add_txt(&mut self, name: &str, value: &str) {
        self.txt
            .entry(norm(name))
            .or_default()
            .push(value.to_string());
    }
    pub fn add_mx(&mut self, name: &str, pref: u16, exchange: &str) {
        self.mx
            .entry(norm(name))
            .or_default()
            .push((pref, norm(exchange)));
    }
    pub fn remove_txt(&mut self, name: &str) {
        self.txt.remove(&norm(name));
    }
    pub fn set_txt(&mut self, name: &str, values: &[&str]) {
        self.txt
            .insert(norm(name), values.iter().map(|v| v.to_string()).collect());
    }
    pub fn set_mx(&mut self, name: &str, mx: &[(u16, &str)]) {
        self.mx
            .insert(norm(name), mx.iter().map(|(p, h)| (*p, norm(h))).collect());
    }
    fn exists(&self, name: &str) -> bool {
        self.txt.contains_key(name) || self.mx.contains_key(name)
    }
}

pub struct DnsServer {
    pub addr: SocketAddr,
    pub zone: Arc<RwLock<Zone>>,
    /// Queries answered over TCP (a truncated UDP answer makes the resolver retry over TCP).
    pub tcp_queries: Arc<std::sync::atomic::AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn answer(zone: &Zone, query: &Message) -> Message {
    let mut resp = Message::response(query.metadata.id, query.metadata.op_code);
    resp.metadata.message_type = MessageType::Response;
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = query.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    let Some(q) = query.queries.first() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp;
    };
    resp.add_query(q.clone());
    let name = norm(&q.name().to_ascii());
    let owner = q.name().clone();
    match q.query_type() {
        RecordType::TXT => {
            for v in zone.txt.get(&name).into_iter().flatten() {
                let chunks = dkim_relay::dns::split_txt(v);
                resp.add_answer(Record::from_rdata(
                    owner.clone(),
                    60,
                    RData::TXT(TXT::new(chunks)),
                ));
            }
        }
        RecordType::MX => {
            for (p, h) in zone.mx.get(&name).into_iter().flatten() {
                if let Ok(exchange) = Name::from_ascii(format!("{h}.")) {
                    resp.add_answer(Record::from_rdata(
                        owner.clone(),
                        60,
                        RData::MX(MX::new(*p, exchange)),
                    ));
                }
            }
        }
        _ => {}
    }
    if resp.answers.is_empty() && !zone.exists(&name) {
        resp.metadata.response_code = ResponseCode::NXDomain;
    }
    if let Some(edns) = &query.edns {
        let mut e = edns.clone();
        e.set_max_payload(1232);
        resp.set_edns(e);
    }
    resp
}

impl DnsServer {
    /// Binds UDP and TCP on one free port of 127.0.0.1 and serves `zone`.
    pub async fn start(zone: Zone) -> DnsServer {
        let zone = Arc::new(RwLock::new(zone));
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let z = Arc::clone(&zone);
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let limit = query
                    .edns
                    .as_ref()
                    .map_or(512, |e| e.max_payload().max(512)) as usize;
                let resp = {
                    let zone = z.read().unwrap();
                    answer(&zone, &query)
                };
                let mut bytes = resp.to_vec().unwrap();
                if bytes.len() > limit {
                    let mut t = resp.truncate();
                    t.metadata.truncation = true;
                    bytes = t.to_vec().unwrap();
                }
                let _ = udp.send_to(&bytes, peer).await;
            }
        });
        let z = Arc::clone(&zone);
        let tcp_queries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&tcp_queries);
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = tcp.accept().await else {
                    continue;
                };
                let z = Arc::clone(&z);
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    loop {
                        let mut len = [0u8; 2];
                        let read =
                            tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut len));
                        if !matches!(read.await, Ok(Ok(_))) {
                            return;
                        }
                        let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
                        if s.read_exact(&mut msg).await.is_err() {
                            return;
                        }
                        let Ok(query) = Message::from_vec(&msg) else {
                            return;
                        };
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let resp = {
                            let zone = z.read().unwrap();
                            answer(&zone, &query)
                        };
                        let bytes = resp.to_vec().unwrap();
                        let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
                        out.extend_from_slice(&bytes);
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        DnsServer {
            addr,
            zone,
            tcp_queries,
            tasks: vec![udp_task, tcp_task],
        }
    }
}
