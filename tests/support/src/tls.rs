//! Test certificates, made with openssl.

use std::path::Path;
use std::process::Command;

use crate::run;

/// A test CA (`ca.pem`) and a server certificate for `ip` (as subjectAltName, which rustls
/// requires; `cert.pem`, key `key.pem`) in `dir`; answers the CA's PEM.
pub fn make_certificates(dir: &Path, ip: &str) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| {
        run(
            Command::new("openssl").current_dir(dir).args(args),
            "openssl",
        )
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=zonebroker test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "req.csr",
        "-subj",
        "/CN=dc1.example.test",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        format!(
            "subjectAltName=IP:{ip},DNS:dc1.example.test\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "req.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::read_to_string(dir.join("ca.pem")).unwrap()
}
