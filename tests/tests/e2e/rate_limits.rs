//! Rate limits: per user and per agency with a token, per address without one; GCRA in
//! Redis, so two gateways sharing Redis enforce one combined limit.

use std::sync::Arc;

use eriop_tests::{TestApp, TestDb};
use reqwest::{Method, Response};

const PASSWORD: &str = "correct horse battery staple";

fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn me(app: &TestApp, base: &str, token: &str) -> Response {
    app.http
        .get(format!("{base}/api/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn past_the_per_user_limit_a_user_gets_429_and_another_user_does_not() {
    let app = TestApp::spawn_with(TestDb::migrated().await, |s| s.rate_limit_per_user = 5).await;
    app.create_user("a@limits.example", PASSWORD, &["viewer"])
        .await;
    app.create_user("b@limits.example", PASSWORD, &["viewer"])
        .await;
    let a = app.access_token("a@limits.example", PASSWORD).await;
    let b = app.access_token("b@limits.example", PASSWORD).await;
    for n in 0..5 {
        let ok = me(&app, &app.base, &a).await;
        assert_eq!(ok.status(), 200, "request {n}");
        assert_eq!(header(&ok, "ratelimit-policy"), "\"user\";q=5;w=60");
        assert!(header(&ok, "ratelimit").starts_with(&format!("\"user\";r={};", 4 - n)));
    }
    let refused = me(&app, &app.base, &a).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!((1..=12).contains(&retry), "Retry-After {retry}");
    assert_eq!(header(&refused, "ratelimit-policy"), "\"user\";q=5;w=60");
    assert!(header(&refused, "ratelimit").starts_with("\"user\";r=0;"));
    assert_eq!(header(&refused, "content-type"), "application/problem+json");
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("ERIOP_RATE_LIMIT_PER_USER"));
    // Another user of the same agency is not touched.
    assert_eq!(me(&app, &app.base, &b).await.status(), 200);
}

#[tokio::test]
async fn two_gateways_sharing_redis_enforce_one_combined_limit() {
    let app = TestApp::spawn_with(TestDb::migrated().await, |s| s.rate_limit_per_user = 6).await;
    let second =
        eriop_gateway::App::build_with_clock(app.settings.clone(), Arc::new(app.clock.clone()))
            .await
            .unwrap();
    let other = format!("http://127.0.0.1:{}", second.port());
    let task = tokio::spawn(async move {
        let _ = second.run_until(std::future::pending()).await;
    });
    let mut statuses = Vec::new();
    for n in 0..10 {
        let base = if n % 2 == 0 { &app.base } else { &other };
        statuses.push(me(&app, base, &app.token).await.status().as_u16());
    }
    // The token's login did not count (no token yet): six calls pass, on either gateway.
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 429, 429, 429, 429]);
    task.abort();
}

#[tokio::test]
async fn an_agency_shares_one_limit_among_its_users() {
    let app = TestApp::spawn_with(TestDb::migrated().await, |s| {
        s.rate_limit_per_agency = 4;
    })
    .await;
    app.create_user("c@limits.example", PASSWORD, &["viewer"])
        .await;
    let c = app.access_token("c@limits.example", PASSWORD).await;
    // The administrator's own calls above count too: start from what is left.
    let mut passed = 0;
    let mut refused = None;
    for n in 0..10 {
        let token = if n % 2 == 0 { &app.token } else { &c };
        let r = me(&app, &app.base, token).await;
        if r.status() == 200 {
            passed += 1;
        } else {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("the agency's limit refuses at last");
    assert!(passed <= 4);
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "ratelimit-policy"), "\"agency\";q=4;w=60");
}

#[tokio::test]
async fn without_a_token_the_address_is_limited_and_spoofed_headers_change_nothing() {
    let app = TestApp::spawn_with(TestDb::migrated().await, |s| {
        s.rate_limit_per_address = 1_000;
        s.trust_proxy_headers = false;
    })
    .await;
    // A fresh limit for this run: its own gateway with a small per-address limit.
    let mut settings = app.settings.clone();
    settings.rate_limit_per_address = 3;
    settings.redis_key_prefix = format!("{}small:", settings.redis_key_prefix);
    let small = eriop_gateway::App::build_with_clock(settings, Arc::new(app.clock.clone()))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", small.port());
    let task = tokio::spawn(async move {
        let _ = small.run_until(std::future::pending()).await;
    });
    let live = |spoof: Option<&'static str>| {
        let mut request = app.http.request(Method::GET, format!("{base}/health/live"));
        if let Some(address) = spoof {
            request = request
                .header("x-real-ip", address)
                .header("x-forwarded-for", address);
        }
        request.send()
    };
    for _ in 0..3 {
        assert_eq!(live(None).await.unwrap().status(), 200);
    }
    let refused = live(None).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "ratelimit-policy"), "\"address\";q=3;w=60");
    // Another address, claimed by the client itself from an untrusted peer: still refused.
    for spoof in ["203.0.113.7", "198.51.100.1"] {
        assert_eq!(live(Some(spoof)).await.unwrap().status(), 429);
    }
    task.abort();
}

/// Password work is bounded: as many argon2id hashes at once as cores, a short queue behind,
/// and past it an immediate 429 with Retry-After, never a pile-up (nor a 5xx).
#[tokio::test]
async fn a_flood_of_logins_waits_in_a_bounded_queue_or_is_refused_at_once() {
    let app = TestApp::spawn_with(TestDb::migrated().await, |s| {
        s.password_hash_queue = 1;
        s.login_attempts_per_ip_per_minute = 1_000;
    })
    .await;
    let logins = (0..24).map(|_| app.try_login(&app.admin_email, "not the password at all"));
    let answers = futures::future::join_all(logins).await;
    let mut busy = 0;
    for answer in &answers {
        match answer.status().as_u16() {
            401 => {}
            429 => {
                busy += 1;
                assert_eq!(header(answer, "retry-after"), "1");
            }
            other => panic!("a login answered {other}"),
        }
    }
    // At most a core's worth hashing and as many waiting: of 24 at once, some are refused
    // at once, and some are checked.
    assert!(busy >= 1, "none of 24 refused");
    assert!(busy < 24, "none checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_each_gateway_limits_alone_and_readiness_says_so() {
    let redis = eriop_tests::TcpProxy::start("127.0.0.1:6379").await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let app = TestApp::spawn_with(TestDb::migrated().await, move |s| {
        s.redis_url = url.into();
        s.rate_limit_per_address = 5;
    })
    .await;
    redis.cut();
    // Anonymous calls go on being served, and are still limited: by this process alone.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let response = app.http.get(app.api("/openapi.json")).send().await.unwrap();
        statuses.push(response.status().as_u16());
    }
    assert!(statuses.contains(&200), "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        3,
        "{statuses:?}"
    );
    let ready = eriop_tests::wait::until(
        "readiness with Redis down",
        std::time::Duration::from_secs(20),
        || async {
            let response = app
                .http
                .get(format!("{}/health/ready", app.base))
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = response.json().await.unwrap();
            (body["checks"]["redis"]["status"] == "down").then_some(body)
        },
    )
    .await;
    let error = ready["checks"]["redis"]["error"].as_str().unwrap();
    assert!(error.contains("per-process limits"), "{error}");
}
