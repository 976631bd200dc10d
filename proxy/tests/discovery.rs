//! DNS discovery against a real DNS server on loopback: records added and
//! removed while the proxy runs. Each origin listens on its own loopback
//! address (127.0.0.2, 127.0.0.3) with the same port, as replicas behind one
//! name do.

mod common;
use common::*;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{rdata::A, RData, Record, RecordType};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A tiny authoritative DNS server for one name, answering A queries from a list.
struct TestDns {
    addr: SocketAddr,
    records: Arc<Mutex<Vec<Ipv4Addr>>>,
}

impl TestDns {
    fn start(name: &'static str) -> TestDns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let records: Arc<Mutex<Vec<Ipv4Addr>>> = Arc::default();
        let rec = records.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, peer)) = sock.recv_from(&mut buf) {
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut resp = Message::new();
                resp.set_id(q.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(q.op_code())
                    .set_recursion_desired(q.recursion_desired())
                    .set_recursion_available(true)
                    .set_authoritative(true);
                resp.add_queries(q.queries().to_vec());
                let mut known = false;
                for query in q.queries() {
                    if query.name().to_ascii().trim_end_matches('.') == name {
                        known = true;
                        if query.query_type() == RecordType::A {
                            for ip in rec.lock().unwrap().iter() {
                                resp.add_answer(Record::from_rdata(
                                    query.name().clone(),
                                    0,
                                    RData::A(A(*ip)),
                                ));
                            }
                        }
                    }
                }
                resp.set_response_code(if known {
                    ResponseCode::NoError
                } else {
                    ResponseCode::NXDomain
                });
                if let Ok(bytes) = resp.to_vec() {
                    let _ = sock.send_to(&bytes, peer);
                }
            }
        });
        TestDns { addr, records }
    }

    fn set(&self, ips: &[Ipv4Addr]) {
        *self.records.lock().unwrap() = ips.to_vec();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_come_and_go_with_their_dns_records() {
    let media = MediaFixture::new().unwrap();
    let port = testkit::reserve_port();
    let ip2: Ipv4Addr = "127.0.0.2".parse().unwrap();
    let ip3: Ipv4Addr = "127.0.0.3".parse().unwrap();
    let _o2 = start_origin_at(&media, &format!("{ip2}:{port}"), &[]);
    let _o3 = start_origin_at(&media, &format!("{ip3}:{port}"), &[]);
    let dns = TestDns::start("origins.test");
    dns.set(&[ip2]);

    let mut sections = default_sections(&[]);
    sections.insert("origins", format!("\n  - dns: origins.test:{port}"));
    sections.insert(
        "discovery",
        format!("{{interval: 300ms, nameservers: [\"{}\"]}}", dns.addr),
    );
    let edge = start_proxy(&sections, 1).await;
    let a2 = format!("{ip2}:{port}");
    let a3 = format!("{ip3}:{port}");
    let (served, failed) = spread(&edge, "/", 40, 4).await;
    assert_eq!((failed, served.get(&a2)), (0, Some(&40)));

    // A new record: the origin takes traffic once it passes a health check.
    dns.set(&[ip2, ip3]);
    wait_origins_up(&edge, 2).await;
    let (served, failed) = spread(&edge, "/", 200, 8).await;
    assert_eq!(failed, 0);
    assert!(
        served.get(&a3).copied().unwrap_or(0) > 20,
        "new origin takes traffic: {served:?}"
    );

    // A vanished record: that origin drains and gets no new requests.
    dns.set(&[ip3]);
    testkit::wait_until(
        "the vanished origin to drain",
        Duration::from_secs(10),
        || async {
            let m = metrics(&edge).await;
            let o = m["origins"]
                .as_array()?
                .iter()
                .find(|o| o["address"] == a2.as_str())
                .cloned();
            // Draining while it may have requests in flight, then forgotten.
            (o.is_none() || o.is_some_and(|o| o["state"] == "draining")).then_some(())
        },
    )
    .await;
    let (served, failed) = spread(&edge, "/", 100, 8).await;
    assert_eq!((failed, served.get(&a2)), (0, None), "{served:?}");
    assert_eq!(served.get(&a3), Some(&100));
    let m = metrics(&edge).await;
    let source = m["origins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["address"] == a3.as_str())
        .unwrap()["source"]
        .clone();
    assert_eq!(source, format!("origins.test:{port}").as_str());
    // Drained and idle, the departed origin leaves no series behind in
    // /prometheus (in Kubernetes, every pod-IP change would add some).
    let label = format!("origin=\"{a2}\"");
    testkit::wait_until(
        "the departed origin's series to go",
        Duration::from_secs(10),
        || async { (!prometheus_text(&edge).await.contains(&label)).then_some(()) },
    )
    .await;
    assert!(prometheus_text(&edge)
        .await
        .contains(&format!("origin=\"{a3}\"")));
}
