//! Domain verification against a real DNS server: dnsmasq on 127.0.0.1
//! (`sso_test_support::dns`), its records rewritten as the test goes.

use std::{net::UdpSocket, time::Duration};

use jiff::{SignedDuration, Timestamp};
use sso_operator::domains::{
    DomainStatus, Owner,
    dns::{Resolver, Settings, Wanted, refresh},
    record,
};
use sso_test_support::dns::{Dnsmasq, txt};

const KEY: &[u8] = b"cluster key for the test";
const GRACE: SignedDuration = SignedDuration::from_hours(1);

fn settings(dns: &Dnsmasq) -> Settings {
    Settings {
        server: Some(dns.addr()),
        timeout: Duration::from_millis(700),
    }
}

fn owner(client_id: &str) -> Owner<'_> {
    Owner {
        namespace: "corp",
        name: "okta",
        issuer: "https://idp.corp.test",
        client_id,
    }
}

/// One domain through one verification pass.
async fn check(
    r: &Resolver,
    domain: &str,
    client_id: &str,
    prev: Option<&DomainStatus>,
    now: Timestamp,
) -> DomainStatus {
    let wanted = [Wanted {
        domain,
        record: record(KEY, owner(client_id), domain),
        prev,
    }];
    refresh(Ok(r), &wanted, now, GRACE, None).await.remove(0)
}

fn state(s: &DomainStatus) -> (&str, &str) {
    (s.state.as_str(), s.reason.as_str())
}

#[tokio::test]
async fn a_domain_through_its_states_on_a_real_dns_server() {
    let mut dns = Dnsmasq::new();
    let (name, value) = record(KEY, owner("client-1"), "corp.test");
    // corp.test exists (an address), without the record yet.
    let exists = "host-record=corp.test,127.0.0.2".to_string();
    dns.serve(std::slice::from_ref(&exists));
    let r = Resolver::new(&settings(&dns)).unwrap();
    let t0: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
    let at = |mins: i64| t0 + SignedDuration::from_mins(mins);

    let absent = check(&r, "corp.test", "client-1", None, t0).await;
    assert_eq!(state(&absent), ("Pending", "RecordNotFound"), "{absent:?}");
    assert_eq!(absent.record_name, "_sso-operator.corp.test");

    dns.serve(&[
        exists.clone(),
        txt(&name, "sso-operator-domain-verification=someone-elses"),
    ]);
    let wrong = check(&r, "corp.test", "client-1", Some(&absent), at(1)).await;
    assert_eq!(state(&wrong), ("Pending", "RecordMismatch"), "{wrong:?}");

    // The right value, beside another TXT value at the same name.
    dns.serve(&[exists.clone(), txt(&name, "v=other"), txt(&name, &value)]);
    let ok = check(&r, "corp.test", "client-1", Some(&wrong), at(2)).await;
    assert_eq!(state(&ok), ("Verified", "Verified"), "{ok:?}");
    assert_eq!(ok.last_verified, Some(at(2)));

    // The server stops answering (a socket that reads nothing): an error
    // after the timeout, verified still within the grace period ...
    dns.stop();
    // (dnsmasq's per-TCP-connection helper may hold the port a moment.)
    let blackhole = (0..100)
        .find_map(|_| {
            UdpSocket::bind(dns.addr())
                .map_err(|_| std::thread::sleep(Duration::from_millis(50)))
                .ok()
        })
        .expect("the DNS port free again");
    let started = std::time::Instant::now();
    let slow = check(&r, "corp.test", "client-1", Some(&ok), at(20)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(state(&slow), ("Verified", "RecheckFailing"), "{slow:?}");
    assert!(slow.message.contains("timed out"), "{}", slow.message);
    // ... and Error once it is over.
    let late = check(&r, "corp.test", "client-1", Some(&slow), at(70)).await;
    assert_eq!(state(&late), ("Error", "LookupTimeout"), "{late:?}");
    drop(blackhole);
    // Nothing on the port at all (the server down): an error too, at once
    // or after the timeout, never a verification.
    let down = check(&r, "corp.test", "client-1", Some(&late), at(71)).await;
    assert_eq!(down.state, "Error", "{down:?}");
    assert!(
        ["LookupFailed", "LookupTimeout"].contains(&down.reason.as_str()),
        "{down:?}"
    );

    // Back, record still there: verified again.
    dns.serve(&[exists.clone(), txt(&name, &value)]);
    let again = check(&r, "corp.test", "client-1", Some(&late), at(71)).await;
    assert_eq!(state(&again), ("Verified", "Verified"), "{again:?}");

    // The client ID changes: a new value, Pending (no grace) until the
    // record is updated.
    let (_, value2) = record(KEY, owner("client-2"), "corp.test");
    assert_ne!(value, value2);
    let moved = check(&r, "corp.test", "client-2", Some(&again), at(72)).await;
    assert_eq!(state(&moved), ("Pending", "RecordMismatch"), "{moved:?}");
    assert_eq!(moved.record_value, value2);
    dns.serve(&[exists, txt(&name, &value2)]);
    let updated = check(&r, "corp.test", "client-2", Some(&moved), at(73)).await;
    assert_eq!(state(&updated), ("Verified", "Verified"), "{updated:?}");

    // A domain that does not exist.
    let nx = check(&r, "nowhere.test", "client-1", None, at(74)).await;
    assert_eq!(state(&nx), ("Error", "DomainNotFound"), "{nx:?}");
}

/// 1,000 domains on one provider: one query each on the first pass, none
/// on a pass before their recheck is due, one each again once it is.
#[tokio::test]
async fn a_thousand_domains_cost_one_query_each_per_recheck() {
    let mut dns = Dnsmasq::new();
    let domains: Vec<String> = (0..1000).map(|i| format!("d{i}.test")).collect();
    let records: Vec<(String, String)> = domains
        .iter()
        .map(|d| record(KEY, owner("client-1"), d))
        .collect();
    let lines: Vec<String> = records.iter().map(|(n, v)| txt(n, v)).collect();
    dns.serve(&lines);
    let r = Resolver::new(&settings(&dns)).unwrap();
    let t0: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
    let pass = async |prev: &[DomainStatus], now| {
        let wanted: Vec<Wanted<'_>> = domains
            .iter()
            .zip(&records)
            .enumerate()
            .map(|(i, (d, rec))| Wanted {
                domain: d,
                record: rec.clone(),
                prev: prev.get(i),
            })
            .collect();
        refresh(Ok(&r), &wanted, now, GRACE, None).await
    };
    let first = pass(&[], t0).await;
    assert!(
        first.iter().all(|s| s.state == "Verified"),
        "{:?}",
        first.iter().find(|s| s.state != "Verified")
    );
    // dnsmasq writes its log as it answers; give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dns.txt_queries(), 1000);
    let second = pass(&first, t0 + SignedDuration::from_mins(5)).await;
    assert_eq!(second, first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        dns.txt_queries(),
        1000,
        "no query before the recheck is due"
    );
    let third = pass(&second, t0 + SignedDuration::from_mins(10)).await;
    assert!(third.iter().all(|s| s.state == "Verified"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(dns.txt_queries(), 2000);
}

/// Two namespaces' providers list one domain, and the domain's DNS holds
/// both their records: the one verified first has it; the other says so,
/// and gets it once the first lets go.
#[tokio::test]
async fn one_domain_two_namespaces_the_first_verified_has_it() {
    use sso_operator::{
        api::IdentityProvider,
        controller::{cache::Cached, domains::Verifier},
    };
    use std::sync::Arc;
    let provider = |ns: &str, name: &str| -> IdentityProvider {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "sso-operator.dev/v1alpha1", "kind": "IdentityProvider",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"issuer": "https://idp.corp.test", "clientID": "c",
                     "clientSecretRef": {"name": "s", "key": "k"},
                     "domains": ["corp.test"]}
        }))
        .unwrap()
    };
    let mut dns = Dnsmasq::new();
    let verifier = Verifier::new(settings(&dns));
    verifier.key.set(KEY.to_vec()).unwrap();
    let value_of = |ns, name| {
        let owner = Owner {
            namespace: ns,
            name,
            issuer: "https://idp.corp.test",
            client_id: "c",
        };
        record(KEY, owner, "corp.test")
    };
    let (name, a_value) = value_of("team-a", "okta");
    let (_, b_value) = value_of("team-b", "evil");
    dns.serve(&[txt(&name, &a_value), txt(&name, &b_value)]);
    let t0: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
    let with = |mut idp: IdentityProvider, d: Vec<DomainStatus>| {
        idp.status = Some(sso_operator::api::IdentityProviderStatus {
            domains: d,
            ..Default::default()
        });
        idp
    };
    // Other providers as the controller's watch cache keeps them.
    let cached = |idp: &IdentityProvider| Arc::new(Cached::new(idp.clone()));

    let a_first = verifier
        .verify(&provider("team-a", "okta"), Some("c"), &[], t0)
        .await;
    assert_eq!(state(&a_first[0]), ("Verified", "Verified"));
    let a = with(provider("team-a", "okta"), a_first);
    let t1 = t0 + SignedDuration::from_mins(1);
    let b_status = verifier
        .verify(&provider("team-b", "evil"), Some("c"), &[cached(&a)], t1)
        .await;
    assert_eq!(
        state(&b_status[0]),
        ("Error", "ClaimedElsewhere"),
        "{b_status:?}"
    );
    assert!(b_status[0].message.contains("team-a/okta"));
    let b = with(provider("team-b", "evil"), b_status);

    // team-a's provider lists the domain no more: team-b's gets it at its
    // next check.
    let a_gone = with(provider("team-a", "okta"), vec![]);
    let t2 = t1 + SignedDuration::from_mins(10);
    let b_now = verifier
        .verify(&b, Some("c"), &[cached(&a_gone), cached(&b)], t2)
        .await;
    assert_eq!(state(&b_now[0]), ("Verified", "Verified"), "{b_now:?}");
    assert_eq!(b_now[0].verified_since, Some(t2));
}

/// A zone whose server never answers, a hundred domains: the lookups not
/// started by the deadline wait (Queued) instead of holding the reconcile
/// for every timeout in turn.
#[tokio::test]
async fn lookups_stop_at_the_deadline() {
    let dns = Dnsmasq::new();
    // The port, with a socket that reads nothing.
    let _blackhole = UdpSocket::bind(dns.addr()).unwrap();
    let r = Resolver::new(&settings(&dns)).unwrap();
    let domains: Vec<String> = (0..100).map(|i| format!("d{i}.test")).collect();
    let wanted: Vec<Wanted<'_>> = domains
        .iter()
        .map(|d| Wanted {
            domain: d,
            record: record(KEY, owner("client-1"), d),
            prev: None,
        })
        .collect();
    let t0: Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let out = refresh(Ok(&r), &wanted, t0, GRACE, Some(deadline)).await;
    let took = started.elapsed();
    let count = |reason: &str| out.iter().filter(|s| s.reason == reason).count();
    // Two rounds of 16 start before the deadline (0 s, 0.7 s); the rest wait.
    assert!(count("LookupTimeout") >= 16, "{out:?}");
    assert!(
        count("Queued") >= 50,
        "{:?}",
        out.iter().map(|s| &s.reason).collect::<Vec<_>>()
    );
    assert_eq!(count("LookupTimeout") + count("Queued"), 100);
    assert!(
        took < Duration::from_secs(3),
        "{took:?} (without the deadline: about 4.5 s)"
    );
}
