//! TOTP codes from an independent implementation (Debian's oathtool), and MFA enrolment as
//! a user does it.

use std::process::Command;

use serde_json::{json, Value};

use crate::TestApp;

/// The RFC 6238 code of `secret` (base32) at `at_unix`, computed by oathtool.
pub fn oathtool(secret: &str, at_unix: i64) -> String {
    let out = Command::new("oathtool")
        .args(["--totp", "-b", "-N", &format!("@{at_unix}"), secret])
        .output()
        .expect("oathtool (Debian's oathtool package) computes TOTP codes independently");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

impl TestApp {
    /// Enrols the owner of `token` in TOTP and confirms it; answers the secret and the
    /// recovery codes.
    pub async fn enrol_totp(&self, token: &str) -> (String, Vec<String>) {
        let enrolment: Value = self
            .http
            .post(self.api("/auth/mfa/totp"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let secret = enrolment["secret"].as_str().unwrap().to_owned();
        let confirmed = self
            .http
            .post(self.api("/auth/mfa/totp/confirm"))
            .bearer_auth(token)
            .json(&json!({ "code": oathtool(&secret, self.clock_unix()) }))
            .send()
            .await
            .unwrap();
        assert_eq!(confirmed.status(), 200);
        let codes = confirmed.json::<Value>().await.unwrap()["recovery_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        (secret, codes)
    }

    /// Answers an MFA challenge.
    pub async fn mfa_verify(&self, mfa_token: &str, code: &str) -> reqwest::Response {
        self.http
            .post(self.api("/auth/mfa/verify"))
            .json(&json!({ "mfa_token": mfa_token, "code": code }))
            .send()
            .await
            .unwrap()
    }
}
