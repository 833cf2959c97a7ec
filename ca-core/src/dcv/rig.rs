//! A real DNSSEC test bed on loopback (tests only): Knot DNS serves a zone signed offline with
//! NSEC3 (`kzonesign`, ECDSA P-256), with one record's RRSIG stripped and another's tampered
//! after signing, and Unbound validates it with the zone's DS as its only trust anchor
//! (`do-not-query-localhost: no`, a stub zone to Knot; `test.` itself answered locally with
//! no data, as a TLD without CAA would be, and every other name refused so nothing leaves the
//! host). Debian packages: `knot`, `knot-dnssecutils`, `unbound`.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

/// The test zone.
pub const ZONE: &str = "example.test.";
/// The value at `_ecert-challenge.www.example.test` (validly signed).
pub const TOKEN: &str = "valid-token-value";

const UNSIGNED: &str = r#"$ORIGIN example.test.
$TTL 30
@                          SOA  ns1.example.test. hostmaster.example.test. 1 3600 900 604800 5
@                          NS   ns1.example.test.
ns1                        A    127.0.0.2
www                        A    192.0.2.1
; no CAA elsewhere: a CAA query is NODATA, proven by NSEC3
; mailbox domains (RFC 9495): one names another CA, one this CA (and forbids domain names)
othermail                  CAA  0 issuemail "other.example"
ourmail                    CAA  0 issuemail "pki.example.hk; account=7"
ourmail                    CAA  0 issue ";"
_ecert-challenge.www       TXT  "valid-token-value"
_ecert-challenge.stripped  TXT  "stripped"
_ecert-challenge.tampered  TXT  "tampered"
"#;

/// Knot (authoritative) and Unbound (validating) running; stopped on drop.
pub struct Rig {
    /// The validating resolver, `127.0.0.3:port`.
    pub resolver: SocketAddr,
    /// The authoritative server, `127.0.0.2:port` (does not validate: a resolver that must
    /// fail the DNSSEC probe).
    pub authoritative: SocketAddr,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl Rig {
    /// Points `config`'s domain checks at this rig's validating resolver (DNSSEC required,
    /// proved on [`ZONE`]), as the CA `pki.example.hk`, with no remote perspectives.
    pub fn configure(&self, config: &mut crate::config::Config) {
        config.dcv.resolver = self.resolver.to_string();
        config.dcv.dnssec = crate::config::Dnssec::Required;
        config.dcv.dnssec_probe = ZONE.into();
        config.dcv.caa_identities = vec!["pki.example.hk".into()];
        config.dcv.timeout_seconds = 3;
        config.dcv.mpic = crate::config::Mpic::Off;
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port(ip: &str) -> u16 {
    loop {
        let udp = UdpSocket::bind((ip, 0)).expect("bind a loopback port");
        let port = udp.local_addr().expect("local address").port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
}

fn run(cmd: &mut Command, what: &str) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e} (installed by ops/test)"));
    assert!(
        o.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether `server` answers a query for `name`/`rtype` (readiness).
fn answers(server: SocketAddr, name: &str, rtype: RecordType) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let mut m = Message::new();
    m.set_id(7)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).expect("a name"), rtype));
    let Ok(bytes) = m.to_vec() else { return false };
    if sock.send_to(&bytes, server).is_err() {
        return false;
    }
    let mut buf = [0u8; 4096];
    matches!(sock.recv(&mut buf), Ok(n) if n > 0)
}

fn wait_ready(child: &mut Child, server: SocketAddr, name: &str, log: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers(server, name, RecordType::SOA) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} not answering after 10 s: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Rig {
    /// Signs the zone, starts Knot on 127.0.0.2 and Unbound on 127.0.0.3 (free ports).
    pub fn start() -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        for sub in ["sign", "storage", "run", "unbound", "signed"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let zone = d.join("example.test.zone");
        std::fs::write(&zone, UNSIGNED).expect("write zone");
        let sign_conf = d.join("sign.conf");
        std::fs::write(
            &sign_conf,
            format!(
                "server:\n    rundir: \"{run}\"\ndatabase:\n    storage: \"{sign}\"\npolicy:\n  - id: test\n    algorithm: ecdsap256sha256\n    ksk-lifetime: 0\n    zsk-lifetime: 0\n    nsec3: on\n    nsec3-iterations: 0\n    nsec3-salt-length: 8\n    nsec3-opt-out: off\n    cds-cdnskey-publish: none\nzone:\n  - domain: {ZONE}\n    file: \"{zone}\"\n    dnssec-signing: on\n    dnssec-policy: test\n    journal-content: none\n",
                run = d.join("run").display(),
                sign = d.join("sign").display(),
                zone = zone.display()
            ),
        )
        .expect("write sign.conf");
        run(
            Command::new("kzonesign")
                .arg("-c")
                .arg(&sign_conf)
                .arg("-o")
                .arg(d.join("signed"))
                .arg(ZONE),
            "kzonesign",
        );
        let signed = std::fs::read_to_string(d.join("signed").join("example.test.zone"))
            .expect("signed zone");
        let served = d.join("served.zone");
        std::fs::write(&served, tamper(&signed)).expect("write served zone");
        let ds = run(
            Command::new("keymgr")
                .arg("-c")
                .arg(&sign_conf)
                .arg(ZONE)
                .arg("ds"),
            "keymgr ds",
        )
        .lines()
        .find(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"DS") && f.get(4) == Some(&"2")
        })
        .expect("a SHA-256 DS from keymgr")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");

        let auth_port = free_port("127.0.0.2");
        let authoritative: SocketAddr = format!("127.0.0.2:{auth_port}").parse().expect("addr");
        let knot_conf = d.join("knot.conf");
        std::fs::write(
            &knot_conf,
            format!(
                "server:\n    listen: 127.0.0.2@{auth_port}\n    rundir: \"{run}\"\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\nlog:\n  - target: stderr\n    any: info\ndatabase:\n    storage: \"{storage}\"\ncontrol:\n    listen: \"{run}/knot.sock\"\nzone:\n  - domain: {ZONE}\n    file: \"{served}\"\n    dnssec-signing: off\n    dnssec-validation: off\n    semantic-checks: off\n    zonefile-load: whole\n    zonefile-sync: -1\n    journal-content: none\n",
                run = d.join("run").display(),
                storage = d.join("storage").display(),
                served = served.display()
            ),
        )
        .expect("write knot.conf");
        let mut children = Vec::new();
        let knot_log = d.join("knotd.log");
        let mut knot = Command::new("knotd")
            .arg("-c")
            .arg(&knot_conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&knot_log).expect("log"))
            .spawn()
            .expect("knotd (installed by ops/test)");
        wait_ready(&mut knot, authoritative, ZONE, &knot_log, "knotd");
        children.push(knot);

        let res_port = free_port("127.0.0.3");
        let resolver: SocketAddr = format!("127.0.0.3:{res_port}").parse().expect("addr");
        let unbound_dir = d.join("unbound");
        let unbound_conf = unbound_dir.join("unbound.conf");
        std::fs::write(
            &unbound_conf,
            format!(
                "server:\n    verbosity: 1\n    interface: 127.0.0.3@{res_port}\n    port: {res_port}\n    do-ip6: no\n    access-control: 127.0.0.0/8 allow\n    username: \"\"\n    chroot: \"\"\n    directory: \"{dir}\"\n    pidfile: \"{dir}/unbound.pid\"\n    do-daemonize: no\n    use-syslog: no\n    logfile: \"\"\n    num-threads: 1\n    so-reuseport: no\n    module-config: \"validator iterator\"\n    trust-anchor: \"{ds}\"\n    trust-anchor-signaling: no\n    ede: yes\n    val-log-level: 2\n    do-not-query-localhost: no\n    local-zone: \"test.\" static\n    local-zone: \".\" refuse\n    local-zone: \"example.test.\" transparent\n    cache-max-ttl: 0\n    cache-max-negative-ttl: 0\n    val-bogus-ttl: 0\n    prefetch: no\n    aggressive-nsec: no\n    qname-minimisation: no\nremote-control:\n    control-enable: no\nstub-zone:\n    name: \"{ZONE}\"\n    stub-addr: 127.0.0.2@{auth_port}\n",
                dir = unbound_dir.display(),
            ),
        )
        .expect("write unbound.conf");
        // Debian's AppArmor profile for /usr/sbin/unbound allows only /etc/unbound and
        // /var/lib/unbound; where AppArmor is on, run a copy (profiles attach by path).
        let mut unbound_bin = PathBuf::from("/usr/sbin/unbound");
        if std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|v| v.trim() == "Y")
        {
            let copy = unbound_dir.join("unbound-bin");
            std::fs::copy(&unbound_bin, &copy).expect("copy unbound");
            unbound_bin = copy;
        }
        let unbound_log = unbound_dir.join("unbound.log");
        let mut unbound = Command::new(&unbound_bin)
            .arg("-d")
            .arg("-c")
            .arg(&unbound_conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&unbound_log).expect("log"))
            .spawn()
            .expect("unbound (installed by ops/test)");
        wait_ready(&mut unbound, resolver, ZONE, &unbound_log, "unbound");
        children.push(unbound);
        Rig {
            resolver,
            authoritative,
            children,
            dir,
        }
    }

    /// The work directory (configurations, zones and logs), for a failing test's message.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The signed zone as served: the RRSIG over `_ecert-challenge.stripped`'s TXT removed, the
/// one over `_ecert-challenge.tampered`'s TXT with its signature's first character changed.
/// Knot dumps one record per line: owner, TTL, type, then for an RRSIG the covered type first
/// and the base64 signature last.
fn tamper(signed: &str) -> String {
    let mut out = String::new();
    for line in signed.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let rrsig_over_txt = f.get(2) == Some(&"RRSIG") && f.get(3) == Some(&"TXT");
        match f.first() {
            Some(&"_ecert-challenge.stripped.example.test.") if rrsig_over_txt => continue,
            Some(&"_ecert-challenge.tampered.example.test.") if rrsig_over_txt => {
                let mut f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
                let sig = f.last_mut().expect("a signature");
                let first = if sig.starts_with('A') { "B" } else { "A" };
                sig.replace_range(0..1, first);
                out.push_str(&f.join("\t"));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}
