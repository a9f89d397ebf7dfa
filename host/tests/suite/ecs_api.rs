//! `EcsApi` over real HTTP against a loopback server with canned ECS JSON: ListTasks paging,
//! DescribeTasks batching, ExecuteCommand, and the mapping of each AWS error to its variant.

use crate::ecs_support;

use ecs_exec::ecs::{self, AwsSettings, EcsApi, EcsError, TaskSelector};
use ecs_exec::exit::Exit;
use ecs_support::{FakeServer, Request, Response, describe_answer, task_arn, task_json};
use serde_json::json;

async fn api_for(server: &FakeServer) -> EcsApi {
    api_at(server.url(), None).await
}

/// An `EcsApi` for `endpoint` with test credentials and nothing from the environment; with
/// `timeouts`, those instead of the production ones.
async fn api_at(endpoint: String, timeouts: Option<aws_config::timeout::TimeoutConfig>) -> EcsApi {
    let settings = AwsSettings {
        region: Some("us-east-1".to_owned()),
        profile: None,
        endpoint_url: Some(endpoint),
    };
    let mut loader = ecs::config_loader(&settings);
    if let Some(timeouts) = timeouts {
        loader = loader.timeout_config(timeouts);
    }
    let config = loader
        .empty_test_environment()
        .test_credentials()
        .load()
        .await;
    EcsApi::new(&config).expect("region is set")
}

fn service() -> TaskSelector {
    TaskSelector::Service("web".to_owned())
}

#[tokio::test]
async fn list_tasks_pages_are_all_read_and_the_running_agent_is_picked() {
    let tasks = vec![
        task_json("t1", "RUNNING", &[("app", Some("PENDING"))]),
        task_json("t2", "PROVISIONING", &[("app", None)]),
        task_json(
            "t3",
            "RUNNING",
            &[("nginx", None), ("app", Some("RUNNING"))],
        ),
    ];
    let server = FakeServer::start(move |request: &Request, index| match request.operation() {
        Some("ListTasks") if index == 0 => Response::json(
            json!({ "taskArns": [task_arn("t1"), task_arn("t2")], "nextToken": "page2" }),
        ),
        Some("ListTasks") => Response::json(json!({ "taskArns": [task_arn("t3")] })),
        Some("DescribeTasks") => describe_answer(request, &tasks),
        _ => Response::error(400, "UnknownOperationException", "unexpected"),
    });
    let api = api_for(&server).await;
    let target = api.resolve_target("prod", &service(), None).await.unwrap();
    assert_eq!(target.task_id, "t3");
    assert_eq!(target.task_arn, task_arn("t3"));
    assert_eq!(target.container_name, "app");
    assert_eq!(target.runtime_id.as_deref(), Some("t3-app-rt"));

    let requests = server.requests();
    let lists: Vec<&Request> = requests
        .iter()
        .filter(|r| r.operation() == Some("ListTasks"))
        .collect();
    assert_eq!(lists.len(), 2);
    assert_eq!(lists[0].json()["desiredStatus"], "RUNNING");
    assert_eq!(lists[0].json()["serviceName"], "web");
    assert_eq!(lists[0].json()["cluster"], "prod");
    assert_eq!(lists[1].json()["nextToken"], "page2");
    let describes: Vec<&Request> = requests
        .iter()
        .filter(|r| r.operation() == Some("DescribeTasks"))
        .collect();
    assert_eq!(describes.len(), 1);
    assert_eq!(
        describes[0].json()["tasks"].as_array().map(Vec::len),
        Some(3)
    );
}

#[tokio::test]
async fn describe_tasks_goes_in_batches_of_100_and_stops_at_the_first_fit() {
    // 250 tasks; only task 150 has a running agent, so batches 1 and 2 are described, not 3.
    let tasks: Vec<serde_json::Value> = (0..250)
        .map(|i| {
            let agent = if i == 150 { "RUNNING" } else { "STOPPED" };
            task_json(&format!("t{i}"), "RUNNING", &[("app", Some(agent))])
        })
        .collect();
    let arns: Vec<String> = (0..250).map(|i| task_arn(&format!("t{i}"))).collect();
    let server = FakeServer::start(move |request: &Request, index| match request.operation() {
        Some("ListTasks") => {
            // Pages of 100, as ECS does.
            let page: Vec<&String> = arns.iter().skip(index * 100).take(100).collect();
            let mut body = json!({ "taskArns": page });
            if (index + 1) * 100 < arns.len() {
                body["nextToken"] = json!(format!("p{}", index + 1));
            }
            Response::json(body)
        }
        Some("DescribeTasks") => describe_answer(request, &tasks),
        _ => Response::error(400, "UnknownOperationException", "unexpected"),
    });
    let api = api_for(&server).await;
    let target = api.resolve_target("prod", &service(), None).await.unwrap();
    assert_eq!(target.task_id, "t150");
    let describes: Vec<usize> = server
        .requests()
        .iter()
        .filter(|r| r.operation() == Some("DescribeTasks"))
        .map(|r| r.json()["tasks"].as_array().map(Vec::len).unwrap_or(0))
        .collect();
    assert_eq!(describes, [100, 100]);
    assert_eq!(
        server
            .operations()
            .iter()
            .filter(|op| *op == "ListTasks")
            .count(),
        3
    );
}

#[tokio::test]
async fn named_container_and_container_not_found() {
    let tasks = vec![task_json(
        "t1",
        "RUNNING",
        &[("app", Some("RUNNING")), ("worker", Some("RUNNING"))],
    )];
    let server = FakeServer::start(move |request: &Request, _| match request.operation() {
        Some("ListTasks") => Response::json(json!({ "taskArns": [task_arn("t1")] })),
        Some("DescribeTasks") => describe_answer(request, &tasks),
        _ => Response::error(400, "UnknownOperationException", "unexpected"),
    });
    let api = api_for(&server).await;
    let target = api
        .resolve_target("prod", &service(), Some("worker"))
        .await
        .unwrap();
    assert_eq!(target.container_name, "worker");
    let err = api
        .resolve_target("prod", &service(), Some("web"))
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::ContainerNotFound { .. }), "{err}");
    assert!(err.to_string().contains("app, worker"), "{err}");
    assert_eq!(err.exit(), Exit::Config);
}

#[tokio::test]
async fn task_is_used_as_given_without_list_tasks() {
    let tasks = vec![task_json("abc", "RUNNING", &[("app", Some("RUNNING"))])];
    let server = FakeServer::start(move |request: &Request, _| match request.operation() {
        Some("DescribeTasks") => describe_answer(request, &tasks),
        _ => Response::error(400, "UnknownOperationException", "unexpected"),
    });
    let api = api_for(&server).await;
    let target = api
        .resolve_target("prod", &TaskSelector::Task("abc".to_owned()), None)
        .await
        .unwrap();
    assert_eq!(target.task_id, "abc");
    assert_eq!(server.operations(), ["DescribeTasks"]);
    assert_eq!(server.requests()[0].json()["tasks"], json!(["abc"]));

    let err = api
        .resolve_target("prod", &TaskSelector::Task("gone".to_owned()), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::TaskNotFound { .. }), "{err}");
    assert!(err.to_string().contains("MISSING"), "{err}");
    assert_eq!(err.exit(), Exit::Unavailable);
}

#[tokio::test]
async fn service_without_tasks_and_without_agents() {
    let server = FakeServer::start(|request: &Request, _| match request.operation() {
        Some("ListTasks") if request.json()["serviceName"] == "empty" => {
            Response::json(json!({ "taskArns": [] }))
        }
        Some("ListTasks") => Response::json(json!({ "taskArns": [task_arn("t1")] })),
        Some("DescribeTasks") => {
            describe_answer(request, &[task_json("t1", "RUNNING", &[("app", None)])])
        }
        _ => Response::error(400, "UnknownOperationException", "unexpected"),
    });
    let api = api_for(&server).await;
    let err = api
        .resolve_target("prod", &TaskSelector::Service("empty".to_owned()), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::ServiceHasNoTasks { .. }), "{err}");
    assert_eq!(err.exit(), Exit::Unavailable);
    let err = api
        .resolve_target("prod", &service(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::NoTaskWithAgent { .. }), "{err}");
    assert!(err.to_string().contains("app agent absent"), "{err}");
}

#[tokio::test]
async fn aws_errors_map_to_variants_with_code_and_request_id() {
    let server = FakeServer::start(|request: &Request, _| {
        match (request.operation(), request.json()["cluster"].as_str()) {
            (Some("ListTasks"), Some("nocluster")) => {
                Response::error(400, "ClusterNotFoundException", "Cluster not found.")
            }
            (Some("ListTasks"), Some("noservice")) => {
                Response::error(400, "ServiceNotFoundException", "Service not found.")
            }
            (Some("ListTasks"), Some("denied")) => {
                Response::json(json!({ "taskArns": [task_arn("t1")] }))
            }
            (Some("DescribeTasks"), Some("denied")) => Response::error(
                400,
                "AccessDeniedException",
                "User: arn:aws:iam::1:user/x is not authorized to perform: ecs:DescribeTasks",
            ),
            (Some("ListTasks"), Some("badkey")) => Response::error(
                400,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            ),
            _ => Response::error(400, "UnknownOperationException", "unexpected"),
        }
    });
    let api = api_for(&server).await;

    let err = api
        .resolve_target("nocluster", &service(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::ClusterNotFound { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("ClusterNotFoundException") && text.contains("request id req-"),
        "{text}"
    );
    assert_eq!(err.exit(), Exit::Config);

    let err = api
        .resolve_target("noservice", &service(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::ServiceNotFound { .. }), "{err}");

    let err = api
        .resolve_target("denied", &service(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::AccessDenied { .. }), "{err}");
    assert!(err.to_string().contains("ecs:DescribeTasks"), "{err}");
    assert_eq!(err.exit(), Exit::NoPerm);

    let err = api
        .resolve_target("badkey", &service(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::InvalidCredentials { .. }), "{err}");
    assert_eq!(err.exit(), Exit::NoPerm);
}

#[tokio::test]
async fn throttling_is_retried() {
    let tasks = vec![task_json("t1", "RUNNING", &[("app", Some("RUNNING"))])];
    let server = FakeServer::start(move |request: &Request, index| match request.operation() {
        Some("ListTasks") if index == 0 => {
            Response::error(400, "ThrottlingException", "Rate exceeded")
        }
        Some("ListTasks") => Response::json(json!({ "taskArns": [task_arn("t1")] })),
        Some("DescribeTasks") => describe_answer(request, &tasks),
        _ => Response::error(400, "UnknownOperationException", "unexpected"),
    });
    let api = api_for(&server).await;
    let target = api.resolve_target("prod", &service(), None).await.unwrap();
    assert_eq!(target.task_id, "t1");
    assert_eq!(
        server.operations(),
        ["ListTasks", "ListTasks", "DescribeTasks"]
    );
}

#[tokio::test]
async fn persistent_throttling_gives_up_after_the_attempt_budget() {
    let server = FakeServer::start(|_: &Request, _| {
        Response::error(400, "ThrottlingException", "Rate exceeded")
    });
    let api = api_for(&server).await;
    let err = api
        .resolve_target("prod", &service(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::Throttled { .. }), "{err}");
    assert_eq!(err.exit(), Exit::TempFail);
    assert_eq!(server.operations().len(), ecs::MAX_ATTEMPTS as usize);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let server =
        FakeServer::start(|_: &Request, _| Response::error(500, "ServerException", "internal"));
    let api = api_for(&server).await;
    let err = api
        .resolve_target("prod", &service(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::ServerError { .. }), "{err}");
    assert_eq!(server.operations().len(), ecs::MAX_ATTEMPTS as usize);
}

#[tokio::test]
async fn malformed_response_is_a_protocol_error() {
    let server = FakeServer::start(|_: &Request, _| Response::raw(200, "{ this is not json"));
    let api = api_for(&server).await;
    let err = api
        .resolve_target("prod", &service(), None)
        .await
        .unwrap_err();
    assert_eq!(err.exit(), Exit::Protocol, "{err:?}");
}

#[tokio::test]
async fn unreachable_endpoint_is_a_temporary_failure() {
    // Bind, learn the port, close: nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let api = api_at(format!("http://127.0.0.1:{port}"), None).await;
    let err = api
        .resolve_target("prod", &service(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::Unreachable { .. }), "{err:?}");
    assert_eq!(err.exit(), Exit::TempFail);
    assert!(err.to_string().contains("ListTasks"), "{err}");
}

#[tokio::test]
async fn execute_command_returns_the_session_and_sends_the_target() {
    let server = FakeServer::start(|request: &Request, _| match request.operation() {
        Some("ExecuteCommand") => Response::json(json!({
            "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
            "containerName": "app",
            "interactive": true,
            "taskArn": task_arn("t1"),
            "session": {
                "sessionId": "ecs-execute-command-123",
                "streamUrl": "wss://ssmmessages.us-east-1.amazonaws.com/v1/data-channel/ecs-execute-command-123",
                "tokenValue": "SECRET-CHANNEL-TOKEN"
            }
        })),
        _ => Response::error(400, "UnknownOperationException", "unexpected"),
    });
    let api = api_for(&server).await;
    let target = ecs::Target {
        cluster_name: "prod".to_owned(),
        task_id: "t1".to_owned(),
        task_arn: task_arn("t1"),
        container_name: "app".to_owned(),
        runtime_id: None,
    };
    let session = api
        .execute_command(&target, "sh -c 'echo hi'", true)
        .await
        .unwrap();
    assert_eq!(session.session_id, "ecs-execute-command-123");
    assert!(session.stream_url.starts_with("wss://"));
    assert_eq!(session.token.expose(), "SECRET-CHANNEL-TOKEN");
    assert!(!format!("{session:?}").contains("SECRET-CHANNEL-TOKEN"));
    let sent = server.requests()[0].json();
    assert_eq!(sent["cluster"], "prod");
    assert_eq!(sent["task"], task_arn("t1"));
    assert_eq!(sent["container"], "app");
    assert_eq!(sent["command"], "sh -c 'echo hi'");
    assert_eq!(sent["interactive"], true);
}

#[tokio::test]
async fn execute_command_errors() {
    let server = FakeServer::start(|request: &Request, _| {
        match request.json()["container"].as_str() {
            Some("offline") => Response::error(
                400,
                "TargetNotConnectedException",
                "The execution target is not connected.",
            ),
            Some("disabled") => Response::error(
                400,
                "InvalidParameterException",
                "The execute command failed because execute command was not enabled when the task was run.",
            ),
            Some("denied") => Response::error(
                400,
                "AccessDeniedException",
                "not authorized to perform: ecs:ExecuteCommand",
            ),
            _ => Response::json(json!({ "session": { "sessionId": "s" } })),
        }
    });
    let api = api_for(&server).await;
    let target = |container: &str| ecs::Target {
        cluster_name: "prod".to_owned(),
        task_id: "t1".to_owned(),
        task_arn: task_arn("t1"),
        container_name: container.to_owned(),
        runtime_id: None,
    };
    let err = api
        .execute_command(&target("offline"), "sh", false)
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::TargetNotConnected { .. }), "{err}");
    assert!(err.to_string().contains("offline"), "{err}");
    assert_eq!(err.exit(), Exit::Unavailable);
    let err = api
        .execute_command(&target("disabled"), "sh", false)
        .await
        .unwrap_err();
    assert!(
        matches!(err, EcsError::ExecuteCommandNotEnabled { .. }),
        "{err}"
    );
    let err = api
        .execute_command(&target("denied"), "sh", false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ecs:ExecuteCommand"), "{err}");
    let err = api
        .execute_command(&target("app"), "sh", false)
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::MalformedResponse { .. }), "{err}");
    assert!(err.to_string().contains("streamUrl"), "{err}");
}

#[tokio::test]
async fn a_silent_endpoint_times_out_instead_of_hanging() {
    // The kernel completes the TCP handshake from the backlog, but nobody ever answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Short timeouts so the test is quick; the production values are checked in the unit tests.
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(std::time::Duration::from_millis(100))
        .operation_timeout(std::time::Duration::from_millis(300))
        .build();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let api = api_at(endpoint, Some(timeouts)).await;
    let err = api
        .resolve_target("prod", &service(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, EcsError::Timeout { .. }), "{err:?}");
    assert_eq!(err.exit(), Exit::TempFail);
    drop(silent);
}
