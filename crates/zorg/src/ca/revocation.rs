//! `zorg ca revoke` and `zorg ca crl`: revocations go into the index, and every CRL lists
//! them all under a number one higher than the last.

use std::path::Path;

use time::OffsetDateTime;

use super::authority::RevokedEntry;
use super::files;
use super::index::{self, Reason, Revocation, Time};
use super::{load_authority, names, open_ca, show_time};

pub(super) fn revoke(
    dir: &Path,
    target: &str,
    reason: Reason,
    now: OffsetDateTime,
) -> Result<(), String> {
    let (_lock, mut index) = open_ca(dir)?;
    let serial = names::serial(target).filter(|s| !s.is_empty());
    let by_serial: Vec<usize> = (0..index.certificates.len())
        .filter(|&i| serial.as_deref() == Some(index.certificates[i].serial.as_str()))
        .collect();
    let selected = if by_serial.is_empty() {
        let domain = names::domain(target).ok();
        (0..index.certificates.len())
            .filter(|&i| {
                domain
                    .as_ref()
                    .is_some_and(|d| index.certificates[i].domains.contains(d))
            })
            .collect()
    } else {
        by_serial
    };
    if selected.is_empty() {
        return Err(format!(
            "no certificate has the serial or names the domain {target:?} in {}: \
             `zorg ca list --dir {}` shows them all",
            dir.join(index::FILE).display(),
            dir.display()
        ));
    }
    let fresh: Vec<usize> = selected
        .into_iter()
        .filter(|&i| index.certificates[i].revoked.is_none())
        .collect();
    if fresh.is_empty() {
        println!("{target}: already revoked, nothing changed");
        return Ok(());
    }
    for &i in &fresh {
        index.certificates[i].revoked = Some(Revocation {
            at: Time::from(now),
            reason,
        });
    }
    index.save(dir)?;
    let serials: Vec<&str> = fresh
        .iter()
        .map(|&i| index.certificates[i].serial.as_str())
        .collect();
    println!(
        "revoked {} certificate(s) for {target}: {}",
        fresh.len(),
        serials.join(", ")
    );
    println!(
        "publish it: zorg ca crl --dir {} --out FILE, then copy FILE to every server",
        dir.display()
    );
    Ok(())
}

pub(super) fn crl(dir: &Path, out: &Path, days: u32, now: OffsetDateTime) -> Result<(), String> {
    let (_lock, mut index) = open_ca(dir)?;
    let ca = load_authority(dir)?;
    let number = index
        .crl_number
        .checked_add(1)
        .ok_or("the CRL number cannot grow any more")?;
    let revoked: Vec<RevokedEntry<'_>> = index
        .certificates
        .iter()
        .filter_map(|c| {
            let r = c.revoked.as_ref()?;
            Some(RevokedEntry {
                serial: &c.serial,
                at: r.at.0,
                reason: r.reason,
            })
        })
        .collect();
    let pem = ca.crl(number, &revoked, days, now)?;
    let count = revoked.len();
    // The number is spent even if writing fails: a CRL number must never be reused.
    index.crl_number = number;
    index.save(dir)?;
    files::replace_atomically(out, pem.as_bytes())?;
    println!(
        "wrote CRL number {number} to {}: {count} revoked certificate(s), next update {}",
        out.display(),
        show_time(now + time::Duration::days(i64::from(days)))
    );
    println!(
        "copy it to every server before then: a revocation reaches a server only with the CRL that lists it"
    );
    Ok(())
}
