//! Tests of the login throttle: reservations, growing delays, per-account pressure, bounds.

use super::*;

fn throttle(per_ip: u32, per_ip_account: u32, per_account: u32) -> LoginThrottle {
    LoginThrottle::new(LoginLimits {
        per_ip,
        per_ip_account,
        per_account,
        window: Duration::from_secs(300),
        delay: Duration::from_secs(1),
        delay_max: Duration::from_secs(8),
        account_delay_max: Duration::from_secs(3),
    })
}

const A: &str = "alice@localhost";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(start_paused = true)]
async fn checks_in_flight_count_before_they_are_answered() {
    let t = throttle(100, 3, 100);
    let attacker = ip("192.0.2.66");
    let held: Vec<_> = (0..3)
        .map(|_| t.reserve(attacker, Some(A)).unwrap())
        .collect();
    assert_eq!(
        t.reserve(attacker, Some(A)).err(),
        Some(Refused::AddressAccount),
        "a fourth parallel guess is refused before any is answered"
    );
    // An exchange that never checked a password gives its place back.
    let mut held = held.into_iter();
    held.next().unwrap().not_checked();
    let again = t.reserve(attacker, Some(A)).unwrap();
    for r in held.chain([again]) {
        r.failed();
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        t.reserve(attacker, Some(A)).err(),
        Some(Refused::AddressAccount)
    );
    // The rightful user elsewhere is not refused.
    t.reserve(ip("198.51.100.7"), Some(A)).unwrap().succeeded();
}

#[tokio::test(start_paused = true)]
async fn the_address_has_its_own_allowance_across_accounts() {
    let t = throttle(3, 100, 100);
    let sprayer = ip("2001:db8::1");
    for n in 0..3 {
        let _ = t
            .reserve(sprayer, Some(&format!("u{n}@localhost")))
            .unwrap()
            .failed();
    }
    // Another address in the same /64 shares it; an invalid name counts too.
    assert_eq!(
        t.reserve(ip("2001:db8::2"), None).err(),
        Some(Refused::Address)
    );
    assert!(t.reserve(ip("2001:db8:0:1::1"), None).is_ok());
    // The count drains: a third of the window later, one more check.
    tokio::time::advance(Duration::from_secs(100)).await;
    t.reserve(sprayer, Some(A)).unwrap().not_checked();
}

#[tokio::test(start_paused = true)]
async fn failed_answers_wait_longer_each_time_and_no_check_starts_meanwhile() {
    // 10 per 5 minutes: the count drains one failure per 30 s, slower than they come.
    let t = throttle(100, 10, 100);
    let a = ip("192.0.2.1");
    let mut delays = Vec::new();
    for _ in 0..6 {
        let d = t.reserve(a, Some(A)).unwrap().failed();
        // Until the answer is due, no new check for this pair starts.
        assert_eq!(t.reserve(a, Some(A)).err(), Some(Refused::AddressAccount));
        tokio::time::advance(d).await;
        delays.push(d.as_secs());
    }
    assert_eq!(delays, [1, 2, 4, 8, 8, 8]);
    // A success ends the streak.
    t.reserve(a, Some(A)).unwrap().succeeded();
    assert_eq!(
        t.reserve(a, Some(A)).unwrap().failed(),
        Duration::from_secs(1)
    );
    // Once the count has drained, the streak is over too.
    tokio::time::advance(Duration::from_secs(300)).await;
    assert_eq!(
        t.reserve(a, Some(A)).unwrap().failed(),
        Duration::from_secs(1)
    );
}

#[tokio::test(start_paused = true)]
async fn pressure_on_an_account_slows_it_down_boundedly_and_never_refuses() {
    let t = throttle(1000, 1000, 2);
    assert_eq!(t.account_delay(A), Duration::ZERO);
    // Many addresses guess; each gets its answer later, but the account is never refused.
    for n in 0..50u32 {
        let addr = IpAddr::from(std::net::Ipv4Addr::from(0xc000_0200 + n));
        let _ = t.reserve(addr, Some(A)).unwrap().failed();
    }
    assert_eq!(t.account_delay(A), Duration::from_secs(3), "bounded");
    assert_eq!(t.account_delay("bob@localhost"), Duration::ZERO);
    let r = t.reserve(ip("198.51.100.7"), Some(A));
    assert!(r.is_ok(), "the rightful user is not refused");
    r.unwrap().succeeded();
    // The attackers' failures stay against the account.
    assert!(t.account_delay(A) > Duration::ZERO);
    // It grows with the pressure: 3 failures, 1 past the allowance of 2 → 1s × 2^1.
    let t = throttle(1000, 1000, 2);
    for n in 0..3u32 {
        let addr = IpAddr::from(std::net::Ipv4Addr::from(0xc000_0200 + n));
        let _ = t.reserve(addr, Some(A)).unwrap().failed();
    }
    assert_eq!(t.account_delay(A), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_success_takes_back_the_users_own_typos_only() {
    let t = throttle(4, 10, 100);
    let ward = ip("192.0.2.1");
    for _ in 0..2 {
        let d = t.reserve(ward, Some(A)).unwrap().failed();
        tokio::time::advance(d).await;
    }
    let _ = t.reserve(ward, Some("mallory@localhost")).unwrap().failed();
    t.reserve(ward, Some(A)).unwrap().succeeded();
    // Two of the address's four are back; mallory's failure stays.
    for user in ["bob@localhost", "carol@localhost"] {
        let _ = t.reserve(ward, Some(user)).unwrap().failed();
    }
    assert_eq!(t.reserve(ward, None).err(), Some(Refused::Address));
}

#[tokio::test(start_paused = true)]
async fn a_check_cut_short_counts_as_failed() {
    let t = throttle(100, 1, 100);
    let a = ip("192.0.2.1");
    drop(t.reserve(a, Some(A)).unwrap());
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(t.reserve(a, Some(A)).err(), Some(Refused::AddressAccount));
}

#[tokio::test(start_paused = true)]
async fn tables_stay_bounded_under_a_spray_of_addresses_and_names() {
    let t = throttle(1000, 1000, 1000);
    for n in 0..(3 * MAX_ENTRIES as u32) {
        let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        let _ = t
            .reserve(addr, Some(&format!("u{n}@localhost")))
            .unwrap()
            .failed();
    }
    let st = t.state();
    assert!(st.ip.len() <= MAX_ENTRIES);
    assert!(st.pair.len() <= MAX_ENTRIES);
    assert!(st.account.len() <= MAX_ENTRIES);
}
