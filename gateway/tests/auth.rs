//! JWT auth, from real WebSocket and HTTP clients: every 401 case, 403, 400-before-token, viewer vs editor, the
//! objects API, expiry mid-connection (close 1008), and RS256 / ES256 tokens verified with a public key.

mod common;

use std::time::{Duration, Instant};

use canvas_gateway::auth::AuthArgs;
use canvas_testkit::{http_get, RedisServer, WsClient};
use common::{
    hs256, jwt_auth, jwt_auth_with, key_file, now_secs, project, refused, sign, spawn_gateway_with,
    token, try_connect, Options, TestGateway,
};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

async fn jwt_gateway(redis: &RedisServer) -> TestGateway {
    spawn_gateway_with(
        &redis.url(),
        Options {
            auth: jwt_auth(),
            ..Options::default()
        },
    )
    .await
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Connects with the token in the Authorization header and reads the snapshot.
async fn join(g: &TestGateway, p: &str, token: &str) -> (WsClient, Value) {
    let auth = bearer(token);
    let mut c = try_connect(&g.ws(p), &[("Authorization", auth.as_str())])
        .await
        .unwrap_or_else(|(status, body)| panic!("refused with {status}: {body}"));
    let snapshot = c.recv_type("snapshot").await.unwrap();
    (c, snapshot)
}

/// GET /api/projects/{p}/objects with these headers: (status, JSON body).
async fn api(g: &TestGateway, path_and_query: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let (status, body) = http_get(&g.http(path_and_query), headers).await.unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn assert_refusal(what: &str, (status, body): (u16, Value), expected: u16, code: &str) {
    assert_eq!(status, expected, "{what}: {body}");
    assert_eq!(body["error"], code, "{what}: {body}");
    let message = body["message"].as_str().unwrap_or("");
    assert!(
        message.len() > 10,
        "{what}: the error says what to fix: {body}"
    );
}

#[tokio::test]
async fn every_invalid_token_gets_401_before_the_upgrade_and_on_the_api() {
    let redis = RedisServer::start();
    let g = jwt_gateway(&redis).await;
    let p = project("auth401");
    let now = now_secs();
    let grant = json!({ p.clone(): "editor" });
    let other_secret = EncodingKey::from_secret(b"not-the-gateway-secret");
    // `alg: none`, hand-made: base64url of {"alg":"none","typ":"JWT"} and of the claims, empty signature.
    let none_token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJtYWxsb3J5IiwiZXhwIjo0MTAyNDQ0ODAwLCJwcm9qZWN0cyI6eyIqIjoiZWRpdG9yIn19.";
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing token", None, "no token"),
        ("empty bearer", Some(String::new()), "no token"),
        ("not a JWT", Some("hello".into()), "well-formed"),
        ("three garbage parts", Some("a.b.c".into()), "well-formed"),
        ("alg none", Some(none_token.into()), "well-formed"),
        (
            "bad signature",
            Some(sign(
                Algorithm::HS256,
                &other_secret,
                &json!({"sub":"mallory","exp":now + 3600,"projects":grant}),
            )),
            "signature",
        ),
        (
            "tampered payload",
            Some({
                let good = hs256(&json!({"sub":"u","exp":now + 3600,"projects":{}}));
                let parts: Vec<&str> = good.split('.').collect();
                let forged = hs256(&json!({"sub":"u","exp":now + 3600,"projects":{"*":"editor"}}));
                let forged_payload = forged.split('.').nth(1).unwrap();
                format!("{}.{}.{}", parts[0], forged_payload, parts[2])
            }),
            "signature",
        ),
        (
            "expired",
            Some(hs256(&json!({"sub":"u","exp":now - 5,"projects":grant}))),
            "expired",
        ),
        (
            "missing sub",
            Some(hs256(&json!({"exp":now + 3600,"projects":grant}))),
            "`sub`",
        ),
        (
            "sub not a string",
            Some(hs256(&json!({"sub":42,"exp":now + 3600,"projects":grant}))),
            "`sub`",
        ),
        (
            "empty sub",
            Some(hs256(&json!({"sub":"","exp":now + 3600,"projects":grant}))),
            "`sub`",
        ),
        (
            "missing exp",
            Some(hs256(&json!({"sub":"u","projects":grant}))),
            "`exp`",
        ),
        (
            "exp not a number",
            Some(hs256(&json!({"sub":"u","exp":"tomorrow","projects":grant}))),
            "`exp`",
        ),
        (
            "not valid yet",
            Some(hs256(
                &json!({"sub":"u","exp":now + 7200,"nbf":now + 3600,"projects":grant}),
            )),
            "nbf",
        ),
        (
            "unknown role",
            Some(hs256(
                &json!({"sub":"u","exp":now + 3600,"projects":{ p.clone(): "owner" }}),
            )),
            "viewer",
        ),
        (
            "projects not an object",
            Some(hs256(
                &json!({"sub":"u","exp":now + 3600,"projects":[p.clone()]}),
            )),
            "`projects`",
        ),
    ];
    for (what, token, hint) in cases {
        // As a header, as ?token=, and on the objects API: all 401 with the same explanation.
        let header = token.as_deref().map(bearer);
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| vec![("Authorization", h)])
            .unwrap_or_default();
        let refusal = refused(&g.ws(&p), &headers).await;
        assert_refusal(what, refusal.clone(), 401, "unauthorized");
        let message = refusal.1["message"].as_str().unwrap().to_string();
        assert!(
            message.contains(hint),
            "{what}: {message:?} should mention {hint:?}"
        );
        if let Some(token) = &token {
            assert!(
                !message.contains(token.as_str()) || token.is_empty(),
                "{what}: the token is not echoed"
            );
            if !token.is_empty() {
                let url = format!("{}?token={token}", g.ws(&p));
                assert_refusal(what, refused(&url, &[]).await, 401, "unauthorized");
            }
        }
        let (status, body) = api(&g, &format!("/api/projects/{p}/objects"), &headers).await;
        assert_refusal(what, (status, body), 401, "unauthorized");
    }
    // A non-Bearer Authorization header.
    assert_refusal(
        "basic auth",
        refused(&g.ws(&p), &[("Authorization", "Basic dXNlcjpwYXNz")]).await,
        401,
        "unauthorized",
    );
    // None of this reached the state: the project is still empty for a legitimate user.
    let (_, snapshot) = join(&g, &p, &token("alice", grant)).await;
    assert_eq!(snapshot["objects"], json!([]));
}

#[tokio::test]
async fn ungranted_project_is_403_and_a_bad_project_id_is_400_whatever_the_token() {
    let redis = RedisServer::start();
    let g = jwt_gateway(&redis).await;
    let p1 = project("mine");
    let p2 = project("theirs");
    let t = token("alice", json!({ p1.clone(): "editor" }));
    let auth = bearer(&t);
    assert_refusal(
        "other project",
        refused(&g.ws(&p2), &[("Authorization", &auth)]).await,
        403,
        "forbidden",
    );
    assert_refusal(
        "other project (api)",
        api(
            &g,
            &format!("/api/projects/{p2}/objects"),
            &[("Authorization", &auth)],
        )
        .await,
        403,
        "forbidden",
    );
    let no_grants = token("alice", json!({}));
    assert_refusal(
        "empty projects",
        refused(&g.ws(&p1), &[("Authorization", &bearer(&no_grants))]).await,
        403,
        "forbidden",
    );
    let no_projects_claim = hs256(&json!({"sub":"alice","exp":now_secs() + 60}));
    assert_refusal(
        "no projects claim",
        refused(
            &g.ws(&p1),
            &[("Authorization", &bearer(&no_projects_claim))],
        )
        .await,
        403,
        "forbidden",
    );
    // The project id is checked first: 400 with no token, a bad token or a good one.
    for headers in [
        vec![],
        vec![("Authorization", "Bearer junk")],
        vec![("Authorization", auth.as_str())],
    ] {
        for bad in ["has%20space", "semi;colon"] {
            let (status, body) = refused(&g.ws(bad), &headers).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert_eq!(body["error"], "bad_request");
            let (status, _) = api(&g, &format!("/api/projects/{bad}/objects"), &headers).await;
            assert_eq!(status, 400);
        }
    }
    // The granted project works, from the header and from ?token=.
    join(&g, &p1, &t).await;
    let mut c = WsClient::connect(&format!("{}?token={t}", g.ws(&p1)))
        .await
        .unwrap();
    c.recv_type("snapshot").await.unwrap();
}

#[tokio::test]
async fn star_grants_every_project_and_an_exact_id_wins_over_it() {
    let redis = RedisServer::start();
    let g = jwt_gateway(&redis).await;
    let special = project("special");
    let any = project("any");
    let t = token("carol", json!({"*": "editor", special.clone(): "viewer"}));
    let (mut c, _) = join(&g, &any, &t).await;
    let ack = c
        .request(json!({"type":"create","object":{"id":"o1","type":"rect"}}))
        .await
        .unwrap();
    assert_eq!(ack["type"], "ack");
    let (mut v, _) = join(&g, &special, &t).await;
    let refused = v
        .request(json!({"type":"create","object":{"id":"o1","type":"rect"}}))
        .await
        .unwrap();
    assert_eq!(
        refused["code"], "forbidden",
        "exact viewer grant wins over \"*\""
    );
    let viewer_star = token("dave", json!({"*": "viewer", special.clone(): "editor"}));
    let (mut e, _) = join(&g, &special, &viewer_star).await;
    let ack = e
        .request(json!({"type":"create","object":{"id":"o1","type":"rect"}}))
        .await
        .unwrap();
    assert_eq!(
        ack["type"], "ack",
        "exact editor grant wins over \"*\": viewer"
    );
}

#[tokio::test]
async fn a_viewer_reads_snapshot_broadcasts_and_api_but_every_edit_is_forbidden() {
    let redis = RedisServer::start();
    let g = jwt_gateway(&redis).await;
    let p = project("viewer");
    let editor = token("erin", json!({ p.clone(): "editor" }));
    let viewer = token("victor", json!({ p.clone(): "viewer" }));
    let (mut e, _) = join(&g, &p, &editor).await;
    e.request(json!({"type":"create","object":{"id":"o1","type":"rect","x":1}}))
        .await
        .unwrap();

    let (mut v, snapshot) = join(&g, &p, &viewer).await;
    assert_eq!(
        snapshot["objects"][0]["id"], "o1",
        "a viewer gets the snapshot"
    );
    for (i, edit) in [
        json!({"type":"create","object":{"id":"o2","type":"rect"}}),
        json!({"type":"update","id":"o1","patch":{"x":99}}),
        json!({"type":"delete","id":"o1"}),
        json!({"type":"update","id":"ghost","patch":{"x":1}}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut edit = edit;
        edit["reqId"] = json!(format!("v{i}"));
        v.send(&edit).await.unwrap();
        let reply = v.recv_type("error").await.unwrap();
        assert_eq!(reply["code"], "forbidden", "{edit}");
        assert_eq!(reply["reqId"], format!("v{i}"));
    }
    // Reads work: ping, resync, presence (a viewer's cursor is shown to others).
    assert_eq!(
        v.request(json!({"type":"ping"})).await.unwrap()["type"],
        "pong"
    );
    let resynced = v.request(json!({"type":"resync"})).await.unwrap();
    assert_eq!(resynced["type"], "snapshot");
    v.send(&json!({"type":"presence","x":3,"y":4}))
        .await
        .unwrap();
    let cursor = e.recv_type("presence").await.unwrap();
    assert_eq!(cursor["by"], "victor");

    // The viewer gets the editor's broadcasts.
    e.request(json!({"type":"update","id":"o1","patch":{"x":2}}))
        .await
        .unwrap();
    let updated = v.recv_type("updated").await.unwrap();
    assert_eq!(updated["patch"], json!({"x":2}));
    assert_eq!(updated["by"], "erin");

    // The API: viewer is enough; the state shows only the editor's edits.
    let (status, body) = api(
        &g,
        &format!("/api/projects/{p}/objects?token={viewer}"),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["objects"],
        json!([{"id":"o1","type":"rect","x":2,"version":2}])
    );
    let (status, _) = api(
        &g,
        &format!("/api/projects/{p}/objects"),
        &[("Authorization", &bearer(&viewer))],
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_token_that_expires_mid_connection_closes_it_with_1008() {
    let redis = RedisServer::start();
    let g = jwt_gateway(&redis).await;
    let p = project("expiry");
    let exp = now_secs() + 2;
    let short = hs256(&json!({"sub":"fay","exp":exp,"projects":{ p.clone(): "editor" }}));
    let long = token("gus", json!({ p.clone(): "editor" }));
    let (mut c, _) = join(&g, &p, &short).await;
    let (mut other, _) = join(&g, &p, &long).await;
    assert_eq!(
        c.request(json!({"type":"create","object":{"id":"o1","type":"rect"}}))
            .await
            .unwrap()["type"],
        "ack",
        "the token works until it expires"
    );
    let started = Instant::now();
    let close = c.closed().await.unwrap().expect("a close frame");
    assert_eq!(u16::from(close.code), 1008, "policy violation: {close:?}");
    assert!(close.reason.contains("expired"), "{close:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed at expiry, not later"
    );
    assert!(now_secs() >= exp, "not closed before expiry");
    // The same token cannot reconnect; the other client is unaffected.
    assert_refusal(
        "expired reconnect",
        refused(&g.ws(&p), &[("Authorization", &bearer(&short))]).await,
        401,
        "unauthorized",
    );
    assert_eq!(
        other.request(json!({"type":"ping"})).await.unwrap()["type"],
        "pong"
    );
}

#[tokio::test]
async fn an_expired_token_edits_nothing_even_while_its_client_stops_reading() {
    let redis = RedisServer::start();
    let g = jwt_gateway(&redis).await;
    let p = project("expiry-stalled");
    let exp = now_secs() + 4;
    let short = hs256(&json!({"sub":"hal","exp":exp,"projects":{ p.clone(): "editor" }}));
    let long = token("ivy", json!({ p.clone(): "editor" }));
    // This client stops reading: its socket's buffers fill and the gateway's write to it blocks.
    let (mut stalled, _) = join(&g, &p, &short).await;
    let (mut flooder, _) = join(&g, &p, &long).await;
    let filler = "x".repeat(60_000);
    for i in 0..200 {
        let reply = flooder
            .request(json!({"type":"create","object":{"id":format!("big{i}"),"type":"rect","fill":filler}}))
            .await
            .unwrap();
        assert_eq!(reply["type"], "ack", "{reply}");
    }
    while now_secs() <= exp {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // After expiry the stalled client still writes: none of it may be applied.
    let _ = stalled
        .send(&json!({"type":"create","reqId":"late","object":{"id":"after-expiry","type":"rect"}}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        redis.cli(&["HEXISTS", &common::keys_of(&p).objects, "after-expiry"]),
        "0",
        "an edit sent after the token expired was applied"
    );
    assert_eq!(
        flooder.request(json!({"type":"ping"})).await.unwrap()["type"],
        "pong",
        "the other client is unaffected"
    );
}

fn public_key_auth(pem_file: Option<&str>, pem_text: Option<&str>, secret: bool) -> Options {
    let file = pem_file.map(|name| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/keys")
            .join(name)
    });
    Options {
        auth: jwt_auth_with(AuthArgs {
            jwt_secret: secret.then(|| common::SECRET.into()),
            jwt_public_key: pem_text.map(str::to_string),
            jwt_public_key_file: file,
            ..AuthArgs::default()
        }),
        ..Options::default()
    }
}

#[tokio::test]
async fn rs256_tokens_verify_with_the_configured_public_key() {
    let redis = RedisServer::start();
    // Key from a file; the algorithm (RS256) is inferred from the key.
    let g = spawn_gateway_with(
        &redis.url(),
        public_key_auth(Some("rsa_public.pem"), None, false),
    )
    .await;
    let p = project("rs256");
    let claims =
        json!({"sub":"idp-user","exp":now_secs() + 600,"projects":{ p.clone(): "editor" }});
    let rsa = EncodingKey::from_rsa_pem(&key_file("rsa_private.pem")).unwrap();
    let good = sign(Algorithm::RS256, &rsa, &claims);
    let (mut c, _) = join(&g, &p, &good).await;
    let ack = c
        .request(json!({"type":"create","object":{"id":"o1","type":"rect"}}))
        .await
        .unwrap();
    assert_eq!(ack["type"], "ack");
    let (status, _) = api(&g, &format!("/api/projects/{p}/objects?token={good}"), &[]).await;
    assert_eq!(status, 200);

    // Signed by another RSA key: bad signature.
    let other = EncodingKey::from_rsa_pem(&key_file("rsa_other_private.pem")).unwrap();
    let forged = sign(Algorithm::RS256, &other, &claims);
    let (status, body) = refused(&g.ws(&p), &[("Authorization", &bearer(&forged))]).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("signature"),
        "{body}"
    );
    // Algorithm confusion: HS256 with the public key as the HMAC secret is refused (HS256 is not configured).
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&key_file("rsa_public.pem")),
        &claims,
    );
    let (status, body) = refused(&g.ws(&p), &[("Authorization", &bearer(&confused))]).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("RS256"),
        "{body}"
    );
    // Another RSA algorithm than the configured one is refused too.
    let rs512 = sign(Algorithm::RS512, &rsa, &claims);
    assert_eq!(
        refused(&g.ws(&p), &[("Authorization", &bearer(&rs512))])
            .await
            .0,
        401
    );
    // Expired RS256: 401.
    let expired = sign(
        Algorithm::RS256,
        &rsa,
        &json!({"sub":"idp-user","exp":now_secs() - 1,"projects":{ p.clone(): "editor" }}),
    );
    assert_eq!(
        refused(&g.ws(&p), &[("Authorization", &bearer(&expired))])
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn es256_tokens_verify_with_the_configured_public_key_alongside_hs256() {
    let redis = RedisServer::start();
    // PEM given as text (CANVAS_JWT_PUBLIC_KEY), and the HS256 secret as well: both kinds are accepted.
    let pem = String::from_utf8(key_file("ec_public.pem")).unwrap();
    let g = spawn_gateway_with(&redis.url(), public_key_auth(None, Some(&pem), true)).await;
    let p = project("es256");
    let claims =
        json!({"sub":"idp-user","exp":now_secs() + 600,"projects":{ p.clone(): "viewer" }});
    let ec = EncodingKey::from_ec_pem(&key_file("ec_private.pem")).unwrap();
    let good = sign(Algorithm::ES256, &ec, &claims);
    let (mut c, snapshot) = join(&g, &p, &good).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(
        c.request(json!({"type":"delete","id":"x"})).await.unwrap()["code"],
        "forbidden",
        "roles apply to public-key tokens too"
    );
    join(&g, &p, &token("hs-user", json!({ p.clone(): "editor" }))).await;
    // A tampered ES256 token: bad signature.
    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        refused(&g.ws(&p), &[("Authorization", &bearer(&tampered))])
            .await
            .0,
        401
    );
    // An RS256 token: no RSA key is configured here.
    let rsa = EncodingKey::from_rsa_pem(&key_file("rsa_private.pem")).unwrap();
    let (status, body) = refused(
        &g.ws(&p),
        &[(
            "Authorization",
            &bearer(&sign(Algorithm::RS256, &rsa, &claims)),
        )],
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("ES256"),
        "{body}"
    );
}

#[test]
fn misconfigured_auth_refuses_to_start_with_a_clear_message() {
    use canvas_gateway::auth::Auth;
    let err = |args: AuthArgs| match Auth::from_args(&args) {
        Ok(_) => panic!("accepted {args:?}"),
        Err(e) => e.to_string(),
    };
    assert!(err(AuthArgs::default()).contains("CANVAS_JWT_SECRET"));
    assert!(err(AuthArgs {
        jwt_public_key_file: Some("/nonexistent/key.pem".into()),
        ..AuthArgs::default()
    })
    .contains("CANVAS_JWT_PUBLIC_KEY_FILE"));
    let ec = String::from_utf8(key_file("ec_public.pem")).unwrap();
    assert!(err(AuthArgs {
        jwt_public_key: Some(ec.clone()),
        jwt_algorithm: Some("RS256".into()),
        ..AuthArgs::default()
    })
    .contains("RS256"));
    assert!(err(AuthArgs {
        jwt_public_key: Some(ec.clone()),
        jwt_algorithm: Some("XY999".into()),
        ..AuthArgs::default()
    })
    .contains("CANVAS_JWT_ALGORITHM"));
    // An explicit algorithm that matches the key is fine.
    assert!(Auth::from_args(&AuthArgs {
        jwt_public_key: Some(ec),
        jwt_algorithm: Some("ES256".into()),
        ..AuthArgs::default()
    })
    .is_ok());
}
