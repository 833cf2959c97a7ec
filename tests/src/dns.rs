//! A small authoritative DNS server over UDP and TCP for the domain-validation tests: it answers
//! from records the test sets while it runs (TXT and CAA), NXDOMAIN for names it has nothing
//! at, and SERVFAIL for names marked broken. Messages are encoded and decoded by hickory-proto,
//! so ecert's resolver talks real DNS to it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::caa::{KeyValue, Property, Value};
use hickory_proto::rr::rdata::{CAA, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};

#[derive(Debug, Default)]
struct Zone {
    records: HashMap<(String, RecordType), Vec<RData>>,
    broken: Vec<String>,
}

/// The server; it stops with the test process.
#[derive(Debug, Clone)]
pub struct DnsServer {
    /// `127.0.0.1:port`, for `[dcv] resolver` (UDP and TCP on the same port).
    pub addr: String,
    zone: Arc<Mutex<Zone>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl DnsServer {
    /// Starts on a free port.
    pub fn start() -> DnsServer {
        // One port for both transports: bind TCP first, then UDP on the same number.
        let (tcp, udp) = loop {
            let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = tcp.local_addr().unwrap().port();
            if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
                break (tcp, udp);
            }
        };
        let addr = tcp.local_addr().unwrap().to_string();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let z = zone.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, peer)) = udp.recv_from(&mut buf) {
                if let Some(reply) = answer(&z, &buf[..n]) {
                    let _ = udp.send_to(&reply, peer);
                }
            }
        });
        let z = zone.clone();
        std::thread::spawn(move || {
            for mut stream in tcp.incoming().flatten() {
                let z = z.clone();
                std::thread::spawn(move || {
                    let mut len = [0u8; 2];
                    while stream.read_exact(&mut len).is_ok() {
                        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if stream.read_exact(&mut msg).is_err() {
                            return;
                        }
                        let Some(reply) = answer(&z, &msg) else {
                            return;
                        };
                        let n = u16::try_from(reply.len()).unwrap().to_be_bytes();
                        if stream
                            .write_all(&n)
                            .and_then(|()| stream.write_all(&reply))
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        DnsServer { addr, zone }
    }

    /// Sets the TXT records at `name` (replacing any).
    pub fn set_txt(&self, name: &str, values: &[&str]) {
        self.set(
            name,
            RecordType::TXT,
            values
                .iter()
                .map(|v| RData::TXT(TXT::new(vec![v.to_string()])))
                .collect(),
        );
    }

    /// Sets the CAA `issue` records at `name` (`None`: `issue ";"`), replacing any.
    pub fn set_caa_issue(&self, name: &str, issuers: &[Option<&str>]) {
        self.set(
            name,
            RecordType::CAA,
            issuers
                .iter()
                .map(|i| {
                    RData::CAA(CAA::new_issue(
                        false,
                        i.map(|n| Name::from_ascii(n).unwrap()),
                        Vec::<KeyValue>::new(),
                    ))
                })
                .collect(),
        );
    }

    /// Sets the CAA `issuemail` records at `name` (RFC 9495), one per value as written
    /// (`"ca.example"`, `";"`), replacing the `issuemail` records there and keeping the other
    /// CAA records in the same RRset.
    pub fn set_caa_issuemail(&self, name: &str, values: &[&str]) {
        let mut zone = self.zone.lock().unwrap();
        let set = zone
            .records
            .entry((key(name), RecordType::CAA))
            .or_default();
        set.retain(
            |r| !matches!(r, RData::CAA(c) if c.tag().as_str().eq_ignore_ascii_case("issuemail")),
        );
        for v in values {
            let mut c = CAA::new_issue(false, None, Vec::<KeyValue>::new());
            c.set_tag(Property::Unknown("issuemail".into()));
            c.set_value(Value::Unknown(v.as_bytes().to_vec()));
            set.push(RData::CAA(c));
        }
    }

    /// Makes every query for `name` answer SERVFAIL (a resolver's answer for bogus DNSSEC).
    pub fn break_name(&self, name: &str) {
        self.zone.lock().unwrap().broken.push(key(name));
    }

    /// Undoes [`DnsServer::break_name`].
    pub fn repair_name(&self, name: &str) {
        self.zone.lock().unwrap().broken.retain(|n| *n != key(name));
    }

    fn set(&self, name: &str, t: RecordType, data: Vec<RData>) {
        self.zone
            .lock()
            .unwrap()
            .records
            .insert((key(name), t), data);
    }
}

fn answer(zone: &Mutex<Zone>, query: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_bytes(query).ok()?;
    let q = req.queries().first()?.clone();
    let name = key(&q.name().to_ascii());
    let mut resp = Message::new();
    resp.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true)
        .add_query(q.clone());
    let z = zone.lock().unwrap();
    if z.broken.contains(&name) {
        resp.set_response_code(ResponseCode::ServFail);
        return resp.to_bytes().ok();
    }
    match z.records.get(&(name.clone(), q.query_type())) {
        Some(data) if !data.is_empty() => {
            for d in data {
                resp.add_answer(Record::from_rdata(q.name().clone(), 60, d.clone()));
            }
        }
        _ => {
            // NODATA when the name has other records, else NXDOMAIN; an SOA makes it a
            // trusted negative answer.
            let exists = z
                .records
                .keys()
                .any(|(n, _)| *n == name || n.ends_with(&format!(".{name}")));
            resp.set_response_code(if exists {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            });
            let soa = SOA::new(
                Name::from_ascii("ns.test.").unwrap(),
                Name::from_ascii("hostmaster.test.").unwrap(),
                1,
                3600,
                600,
                86400,
                60,
            );
            resp.add_name_server(Record::from_rdata(Name::root(), 60, RData::SOA(soa)));
        }
    }
    resp.to_bytes().ok()
}
