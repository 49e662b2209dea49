//! `zorg ca init` and `zorg ca issue`: the commands that make keys and certificates.
//! Nothing is ever overwritten, keys are created mode 0600, and a certificate is in the index
//! before its files exist, so the auditor can always revoke what was signed.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::authority::{self, CA_CERT, CA_KEY, Request};
use super::files::{self, DirLock};
use super::index::{self, Index, Issued, Time};
use super::{load_authority, names, open_ca, show_time};

pub(super) fn init(
    dir: &Path,
    name: &str,
    crl_url: Option<String>,
    days: u32,
    now: OffsetDateTime,
) -> Result<(), String> {
    let name = names::ca_name(name)?;
    let crl_url = crl_url.map(|u| names::crl_url(&u)).transpose()?;
    files::create_private_dir(dir)?;
    let _lock = DirLock::take(dir)?;
    if let Some(f) = [CA_KEY, CA_CERT, index::FILE]
        .into_iter()
        .find(|f| dir.join(f).exists())
    {
        return Err(format!(
            "{} already holds a CA ({f} exists), and zorg ca never replaces one: to issue with \
             it, use `zorg ca issue --dir {}`; for a new CA, choose another --dir",
            dir.display(),
            dir.display()
        ));
    }
    let root = authority::make_root(&name, days, now)?;
    let (key, cert) = (dir.join(CA_KEY), dir.join(CA_CERT));
    files::create_private(&key, root.key_pem.as_bytes())?;
    let rest = files::create_public(&cert, root.cert_pem.as_bytes()).and_then(|()| {
        Index::new(name.clone(), crl_url.clone(), now)
            .save(dir)
            .inspect_err(|_| drop(std::fs::remove_file(&cert)))
    });
    if let Err(e) = rest {
        // Half a CA is no CA: leave the directory as it was so that init can run again.
        let _ = std::fs::remove_file(&key);
        return Err(e);
    }
    println!(
        "created the CA \"{name}\" in {}, valid until {}",
        dir.display(),
        show_time(root.not_after)
    );
    println!(
        "  {}  the root certificate: every federated server's trust anchor",
        cert.display()
    );
    println!(
        "  {}  its private key (mode 0600): keep it secret, offline, backed up",
        key.display()
    );
    if let Some(fp) = authority::fingerprint(&root.cert_pem) {
        println!("  SHA-256 fingerprint {fp}");
    }
    match crl_url {
        Some(url) => println!("  every certificate issued will name the CRL at {url}"),
        None => {
            println!("  certificates will name no CRL location (give --crl-url to init for one)")
        }
    }
    Ok(())
}

/// What `issue` was asked for.
pub(super) struct IssueArgs {
    pub domains: Vec<String>,
    pub out: PathBuf,
    pub xmppaddr: bool,
    pub days: u32,
}

pub(super) fn issue(dir: &Path, args: IssueArgs, now: OffsetDateTime) -> Result<(), String> {
    let mut domains: Vec<String> = Vec::new();
    for d in &args.domains {
        let d = names::domain(d)?;
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    let (_lock, mut index) = open_ca(dir)?;
    let ca = load_authority(dir)?;
    let first = domains.first().ok_or("give at least one --domain")?;
    std::fs::create_dir_all(&args.out).map_err(|e| files::io_err(&args.out, e))?;
    let out = std::path::absolute(&args.out).map_err(|e| files::io_err(&args.out, e))?;
    let (cert_file, key_file) = (
        out.join(format!("{first}.crt")),
        out.join(format!("{first}.key")),
    );
    if let Some(p) = [&cert_file, &key_file].into_iter().find(|p| p.exists()) {
        return Err(format!(
            "{} exists, and zorg ca does not overwrite certificates or keys: move it away, or \
             choose another --out",
            p.display()
        ));
    }
    let req = Request {
        domains: &domains,
        xmppaddr: args.xmppaddr,
        days: args.days,
        crl_url: index.crl_url.as_deref(),
    };
    let made = ca.issue(&req, now)?;
    if index.certificates.iter().any(|c| c.serial == made.serial) {
        return Err(
            "the random serial is already in the index (a one in 2^126 chance): run the \
             command again"
                .into(),
        );
    }
    // Recorded before the files exist: a certificate the index does not know could not be revoked.
    index.certificates.push(Issued {
        serial: made.serial.clone(),
        domains: domains.clone(),
        xmppaddr: args.xmppaddr,
        issued: Time::from(now),
        not_after: Time::from(made.not_after),
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
        revoked: None,
    });
    index.save(dir)?;
    let copies = dir.join("issued");
    let written = std::fs::create_dir_all(&copies)
        .map_err(|e| files::io_err(&copies, e))
        .and_then(|()| {
            files::create_public(
                &copies.join(format!("{}.crt", made.serial)),
                made.cert_pem.as_bytes(),
            )
        })
        .and_then(|()| files::create_private(&key_file, made.key_pem.as_bytes()))
        .and_then(|()| files::create_public(&cert_file, made.cert_pem.as_bytes()));
    if let Err(e) = written {
        return Err(format!(
            "{e}\ncertificate {} is in the index but was not fully written: revoke it with \
             `zorg ca revoke --dir {} {}` and issue again",
            made.serial,
            dir.display(),
            made.serial
        ));
    }
    println!(
        "issued certificate {} for {}, valid until {}",
        made.serial,
        domains.join(", "),
        show_time(made.not_after)
    );
    println!("  {}  the chain (server, then CA)", cert_file.display());
    println!(
        "  {}  its private key (mode 0600): hand it to the server's operator securely",
        key_file.display()
    );
    Ok(())
}
