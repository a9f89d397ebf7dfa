//! The ECS JSON API over real HTTP: response shapes, paging, every error code, and SigV4
//! acceptance and rejection with signatures made by the `aws-sigv4` crate.

use crate::common;

use std::time::{Duration, SystemTime};

use common::{ECS, Signer, call};
use ecs_exec_emulator::{Config, CredentialsConfig, Emulator};
use serde_json::json;

async fn start() -> ecs_exec_emulator::EmulatorHandle {
    Emulator::start(Config::default()).await.unwrap()
}

#[tokio::test]
async fn list_tasks_shape_and_paging() {
    let handle = start().await;
    let signer = Signer::for_handle(&handle);
    let target = format!("{ECS}.ListTasks");
    let all = call(
        handle.local_addr(),
        Some(&signer),
        &target,
        &json!({"cluster": "demo", "serviceName": "web"}),
    )
    .await;
    assert_eq!(all.status, 200);
    assert_eq!(all.headers["content-type"], "application/x-amz-json-1.1");
    assert!(all.headers.contains_key("x-amzn-requestid"));
    let arns = all.json["taskArns"].as_array().unwrap();
    assert_eq!(arns.len(), 2, "two RUNNING tasks by default");
    assert!(all.json.get("nextToken").is_none());
    for arn in arns {
        let arn = arn.as_str().unwrap();
        assert!(
            arn.starts_with("arn:aws:ecs:us-east-1:123456789012:task/demo/"),
            "{arn}"
        );
        let id = arn.rsplit('/').next().unwrap();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({"cluster": "demo", "serviceName": "web", "maxResults": 1});
        if let Some(t) = &token {
            body["nextToken"] = json!(t);
        }
        let page = call(handle.local_addr(), Some(&signer), &target, &body).await;
        assert_eq!(page.status, 200);
        let arns = page.json["taskArns"].as_array().unwrap();
        assert_eq!(arns.len(), 1);
        seen.push(arns[0].clone());
        match page.json.get("nextToken").and_then(|t| t.as_str()) {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(&seen, arns);

    let stopped = call(
        handle.local_addr(),
        Some(&signer),
        &target,
        &json!({"cluster": "demo", "serviceName": "web", "desiredStatus": "STOPPED"}),
    )
    .await;
    assert_eq!(stopped.json["taskArns"].as_array().unwrap().len(), 1);
    let cluster_wide = call(
        handle.local_addr(),
        Some(&signer),
        &target,
        &json!({"cluster": "arn:aws:ecs:us-east-1:123456789012:cluster/demo"}),
    )
    .await;
    assert_eq!(
        cluster_wide.json["taskArns"].as_array().unwrap().len(),
        3,
        "web ×2 + no-agent"
    );
}

#[tokio::test]
async fn describe_tasks_shape() {
    let handle = start().await;
    let signer = Signer::for_handle(&handle);
    let demo = handle.world().cluster(Some("demo")).unwrap();
    let no_agent = demo.tasks.iter().find(|t| t.service == "no-agent").unwrap();
    let web = common::web_task(&handle);
    let missing = "0".repeat(32);
    let reply = call(
        handle.local_addr(),
        Some(&signer),
        &format!("{ECS}.DescribeTasks"),
        &json!({"cluster": "demo", "tasks": [web, no_agent.arn, missing]}),
    )
    .await;
    assert_eq!(reply.status, 200);
    let tasks = reply.json["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    let first = &tasks[0];
    assert_eq!(first["lastStatus"], "RUNNING");
    assert_eq!(first["desiredStatus"], "RUNNING");
    assert_eq!(first["enableExecuteCommand"], true);
    assert_eq!(first["group"], "service:web");
    assert!(first["createdAt"].is_number());
    let container = &first["containers"][0];
    assert_eq!(container["name"], "app");
    assert_eq!(container["lastStatus"], "RUNNING");
    assert_eq!(container["taskArn"], first["taskArn"]);
    assert!(
        container["runtimeId"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{web}-"))
    );
    let agent = &container["managedAgents"][0];
    assert_eq!(agent["name"], "ExecuteCommandAgent");
    assert_eq!(agent["lastStatus"], "RUNNING");
    assert_eq!(
        tasks[1]["containers"][0]["managedAgents"][0]["lastStatus"],
        "STOPPED"
    );
    let failures = reply.json["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["reason"], "MISSING");
    assert!(failures[0]["arn"].as_str().unwrap().ends_with(&missing));
}

#[tokio::test]
async fn execute_command_returns_a_stream_url_on_the_same_port() {
    let handle = start().await;
    let signer = Signer::for_handle(&handle);
    let task = common::web_task(&handle);
    let reply = call(
        handle.local_addr(),
        Some(&signer),
        &format!("{ECS}.ExecuteCommand"),
        &json!({"cluster": "demo", "task": task, "container": "app", "command": "/bin/sh", "interactive": true}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    let json = &reply.json;
    assert_eq!(
        json["clusterArn"],
        "arn:aws:ecs:us-east-1:123456789012:cluster/demo"
    );
    assert_eq!(json["containerName"], "app");
    assert_eq!(json["interactive"], true);
    assert!(
        json["containerArn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:ecs:us-east-1:123456789012:container/demo/")
    );
    assert!(json["taskArn"].as_str().unwrap().ends_with(&task));
    let session_id = json["session"]["sessionId"].as_str().unwrap();
    assert!(session_id.starts_with("ecs-execute-command-"));
    assert_eq!(
        json["session"]["streamUrl"],
        format!(
            "ws://{}/v1/data-channel/{session_id}?role=publish_subscribe",
            handle.local_addr()
        )
    );
    assert!(json["session"]["tokenValue"].as_str().unwrap().len() >= 32);
    assert_eq!(handle.counters().sessions_created, 1);
}

async fn error_of(
    handle: &ecs_exec_emulator::EmulatorHandle,
    signer: &Signer,
    op: &str,
    body: serde_json::Value,
) -> (String, String) {
    let reply = call(
        handle.local_addr(),
        Some(signer),
        &format!("{ECS}.{op}"),
        &body,
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.json);
    let code = reply.json["__type"].as_str().unwrap().to_string();
    assert_eq!(reply.headers["x-amzn-errortype"], code);
    (code, reply.json["message"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn every_api_error() {
    let handle = start().await;
    let signer = Signer::for_handle(&handle);
    let demo = handle.world().cluster(Some("demo")).unwrap();
    let web = common::web_task(&handle);
    let stopped = demo
        .tasks
        .iter()
        .find(|t| t.status == ecs_exec_emulator::world::TaskStatus::Stopped)
        .unwrap();
    let no_agent = demo.tasks.iter().find(|t| t.service == "no-agent").unwrap();
    let exec = |task: &str, interactive: bool| json!({"cluster": "demo", "task": task, "container": "app", "command": "sh", "interactive": interactive});

    let (code, message) = error_of(&handle, &signer, "ListTasks", json!({"cluster": "nope"})).await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("ClusterNotFoundException", "Cluster not found.")
    );
    assert_eq!(
        error_of(
            &handle,
            &signer,
            "DescribeTasks",
            json!({"cluster": "nope", "tasks": [web]})
        )
        .await
        .0,
        "ClusterNotFoundException"
    );
    assert_eq!(
        error_of(
            &handle,
            &signer,
            "ExecuteCommand",
            json!({"cluster": "nope", "task": web, "command": "sh", "interactive": true})
        )
        .await
        .0,
        "ClusterNotFoundException"
    );
    assert_eq!(
        error_of(
            &handle,
            &signer,
            "ListTasks",
            json!({"cluster": "demo", "serviceName": "nope"})
        )
        .await
        .0,
        "ServiceNotFoundException"
    );
    assert_eq!(
        error_of(
            &handle,
            &signer,
            "ListTasks",
            json!({"cluster": "demo", "maxResults": 101})
        )
        .await
        .0,
        "InvalidParameterException"
    );
    assert_eq!(
        error_of(
            &handle,
            &signer,
            "ListTasks",
            json!({"cluster": "demo", "nextToken": "garbage"})
        )
        .await
        .0,
        "InvalidParameterException"
    );
    assert_eq!(
        error_of(
            &handle,
            &signer,
            "DescribeTasks",
            json!({"cluster": "demo", "tasks": []})
        )
        .await
        .0,
        "InvalidParameterException"
    );

    let (code, message) = error_of(&handle, &signer, "ExecuteCommand", exec(&web, false)).await;
    assert_eq!(code, "InvalidParameterException");
    assert_eq!(message, "Interactive is the only mode supported currently.");
    assert_eq!(
        error_of(&handle, &signer, "ExecuteCommand", exec(&stopped.id, true))
            .await
            .0,
        "InvalidParameterException"
    );
    let (code, message) =
        error_of(&handle, &signer, "ExecuteCommand", exec(&no_agent.id, true)).await;
    assert_eq!(code, "TargetNotConnectedException");
    assert!(message.contains("execute command agent"), "{message}");
    let mut wrong_container = exec(&web, true);
    wrong_container["container"] = json!("db");
    assert_eq!(
        error_of(&handle, &signer, "ExecuteCommand", wrong_container)
            .await
            .0,
        "InvalidParameterException"
    );

    let reply = call(
        handle.local_addr(),
        Some(&signer),
        &format!("{ECS}.RunTask"),
        &json!({}),
    )
    .await;
    assert_eq!(reply.json["__type"], "UnknownOperationException");
    let reply = common::raw_post(
        handle.local_addr(),
        &[("x-amz-target".into(), format!("{ECS}.ListTasks"))],
        b"{}",
    )
    .await;
    assert_eq!(reply.json["__type"], "MissingAuthenticationTokenException");
    assert_eq!(handle.counters().sessions_created, 0);
}

#[tokio::test]
async fn access_denied_for_denied_actions() {
    let mut config = Config::default();
    config.credentials.push(CredentialsConfig {
        access_key_id: "AKIAREADONLY00000000".into(),
        secret_access_key: "read-only-secret".into(),
        session_token: None,
        deny: vec!["ecs:ExecuteCommand".into()],
    });
    let handle = Emulator::start(config).await.unwrap();
    let mut signer = Signer::for_handle(&handle);
    signer.access_key_id = "AKIAREADONLY00000000".into();
    signer.secret_access_key = "read-only-secret".into();
    let web = common::web_task(&handle);
    let (code, message) = error_of(
        &handle,
        &signer,
        "ExecuteCommand",
        json!({"cluster": "demo", "task": web, "command": "sh", "interactive": true}),
    )
    .await;
    assert_eq!(code, "AccessDeniedException");
    assert!(message.contains("ecs:ExecuteCommand"), "{message}");
    let reply = call(
        handle.local_addr(),
        Some(&signer),
        &format!("{ECS}.ListTasks"),
        &json!({"cluster": "demo"}),
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn sigv4_rejections() {
    let handle = start().await;
    let good = Signer::for_handle(&handle);
    let target = format!("{ECS}.ListTasks");
    let body = json!({"cluster": "demo"});
    let code = |reply: common::Reply| {
        assert_eq!(reply.status, 400);
        reply.json["__type"].as_str().unwrap().to_string()
    };

    assert_eq!(
        call(handle.local_addr(), Some(&good), &target, &body)
            .await
            .status,
        200
    );

    let mut wrong_secret = good.clone();
    wrong_secret.secret_access_key = "not-the-secret".into();
    assert_eq!(
        code(call(handle.local_addr(), Some(&wrong_secret), &target, &body).await),
        "InvalidSignatureException"
    );

    let mut unknown_key = good.clone();
    unknown_key.access_key_id = "AKIAUNKNOWN000000000".into();
    assert_eq!(
        code(call(handle.local_addr(), Some(&unknown_key), &target, &body).await),
        "UnrecognizedClientException"
    );

    let mut wrong_region = good.clone();
    wrong_region.region = "eu-west-1".into();
    assert_eq!(
        code(call(handle.local_addr(), Some(&wrong_region), &target, &body).await),
        "InvalidSignatureException"
    );

    let mut wrong_service = good.clone();
    wrong_service.service = "ssm".into();
    assert_eq!(
        code(call(handle.local_addr(), Some(&wrong_service), &target, &body).await),
        "InvalidSignatureException"
    );

    let mut old = good.clone();
    old.time = SystemTime::now() - Duration::from_secs(3600);
    let reply = call(handle.local_addr(), Some(&old), &target, &body).await;
    assert!(
        reply.json["message"]
            .as_str()
            .unwrap()
            .starts_with("Signature expired")
    );
    assert_eq!(code(reply), "InvalidSignatureException");

    let mut with_token = good.clone();
    with_token.session_token = Some("unexpected".into());
    assert_eq!(
        code(call(handle.local_addr(), Some(&with_token), &target, &body).await),
        "UnrecognizedClientException"
    );

    // A body changed after signing.
    let reply = {
        let signed_for = json!({"cluster": "demo"});
        let mut reply = None;
        // Sign one body, send another: build the headers by signing, then swap the body.
        let headers = common::request_headers(
            handle.local_addr(),
            Some(&good),
            &target,
            &signed_for.to_string(),
        );
        reply.replace(
            common::raw_post(handle.local_addr(), &headers, br#"{"cluster":"other"}"#).await,
        );
        reply.unwrap()
    };
    assert_eq!(code(reply), "InvalidSignatureException");
    assert_eq!(handle.counters().signature_failures, 7);
}

#[tokio::test]
async fn session_tokens_are_checked() {
    let mut config = Config::default();
    config.credentials[0].session_token = Some("the-session-token".into());
    let handle = Emulator::start(config).await.unwrap();
    let good = Signer::for_handle(&handle);
    assert_eq!(good.session_token.as_deref(), Some("the-session-token"));
    let target = format!("{ECS}.ListTasks");
    let body = json!({"cluster": "demo"});
    assert_eq!(
        call(handle.local_addr(), Some(&good), &target, &body)
            .await
            .status,
        200
    );
    let mut missing = good.clone();
    missing.session_token = None;
    assert_eq!(
        call(handle.local_addr(), Some(&missing), &target, &body)
            .await
            .json["__type"],
        "UnrecognizedClientException"
    );
    let mut wrong = good.clone();
    wrong.session_token = Some("another-token".into());
    assert_eq!(
        call(handle.local_addr(), Some(&wrong), &target, &body)
            .await
            .json["__type"],
        "UnrecognizedClientException"
    );
}

#[tokio::test]
async fn ssm_resume_and_terminate_are_signed_for_ssm() {
    let handle = start().await;
    let mut ssm = Signer::for_handle(&handle);
    ssm.service = "ssm".into();
    let task = common::web_task(&handle);
    let (session_id, _, _) = common::execute(&handle, &task, "sleep 5").await;
    let reply = call(
        handle.local_addr(),
        Some(&ssm),
        "AmazonSSM.ResumeSession",
        &json!({"SessionId": session_id}),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.json);
    assert_eq!(reply.json["SessionId"], session_id.as_str());
    assert!(reply.json["TokenValue"].as_str().unwrap().len() >= 32);
    // Signed for ecs instead: refused.
    let ecs = Signer::for_handle(&handle);
    let reply = call(
        handle.local_addr(),
        Some(&ecs),
        "AmazonSSM.ResumeSession",
        &json!({"SessionId": session_id}),
    )
    .await;
    assert_eq!(reply.json["__type"], "InvalidSignatureException");
    let reply = call(
        handle.local_addr(),
        Some(&ssm),
        "AmazonSSM.TerminateSession",
        &json!({"SessionId": session_id}),
    )
    .await;
    assert_eq!(reply.json["SessionId"], session_id.as_str());
    let reply = call(
        handle.local_addr(),
        Some(&ssm),
        "AmazonSSM.ResumeSession",
        &json!({"SessionId": session_id}),
    )
    .await;
    assert_eq!(reply.json["__type"], "DoesNotExistException");
}

#[test]
fn spawn_in_thread_serves_non_async_tests() {
    let handle = ecs_exec_emulator::EmulatorHandle::spawn_in_thread(Config::default()).unwrap();
    assert!(handle.endpoint().starts_with("http://127.0.0.1:"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let signer = Signer::for_handle(&handle);
    let reply = runtime.block_on(call(
        handle.local_addr(),
        Some(&signer),
        &format!("{ECS}.ListTasks"),
        &json!({"cluster": "demo"}),
    ));
    assert_eq!(reply.status, 200);
    assert_eq!(handle.counters().api_requests, 1);
    let addr = handle.local_addr();
    drop(handle);
    // Once dropped, nothing listens there any more. Other tests start emulators on free ports
    // meanwhile, and one may be handed the port just freed: that is only a failure when it
    // happens to three emulators in a row, which a listener left open would always do.
    let mut still_listening = vec![addr];
    while let Some(&last) = still_listening.last()
        && std::net::TcpStream::connect(last).is_ok()
    {
        assert!(
            still_listening.len() < 3,
            "dropped emulators still listened at {still_listening:?}"
        );
        let handle = ecs_exec_emulator::EmulatorHandle::spawn_in_thread(Config::default()).unwrap();
        still_listening.push(handle.local_addr());
    }
}
