//! Target selection as pure functions over DescribeTasks-shaped data.
//!
//! [`TaskView`] and [`ContainerView`] hold the few fields of a described task that matter;
//! [`select_target`] picks the task and container the session will run in, or says precisely why
//! none fits. No IO here: the calls live in `ecs/mod.rs` and `ecs/api.rs`, so every rule is unit-tested.

use super::Target;
use super::error::EcsError;

/// The status ECS reports for a running task, container or managed agent.
pub const RUNNING: &str = "RUNNING";

/// The name of the managed agent that ECS Exec needs in the container.
pub const EXECUTE_COMMAND_AGENT: &str = "ExecuteCommandAgent";

/// How many tasks the "no running agent" message describes before it summarises the rest.
const SUMMARY_TASKS: usize = 3;

/// The parts of one described task that target selection needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView {
    /// The task ARN.
    pub task_arn: String,
    /// `lastStatus`, e.g. `RUNNING`, `PENDING`, `STOPPED`.
    pub last_status: Option<String>,
    /// `enableExecuteCommand`.
    pub enable_execute_command: bool,
    /// The containers, in the order DescribeTasks lists them.
    pub containers: Vec<ContainerView>,
}

/// The parts of one container that target selection needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerView {
    /// The container name.
    pub name: String,
    /// The container runtime id (part of the SSM target).
    pub runtime_id: Option<String>,
    /// `lastStatus` of the `ExecuteCommandAgent` managed agent; `None` when it has none.
    pub exec_agent_status: Option<String>,
}

impl ContainerView {
    fn agent_running(&self) -> bool {
        self.exec_agent_status.as_deref() == Some(RUNNING)
    }
}

impl TaskView {
    /// Extracts the view from a described task; `None` for a task without an ARN (nothing to
    /// target).
    pub fn from_wire(task: &super::api::Task) -> Option<TaskView> {
        let task_arn = task.task_arn.clone()?;
        let containers = task
            .containers
            .iter()
            .filter_map(|container| {
                Some(ContainerView {
                    name: container.name.clone()?,
                    runtime_id: container.runtime_id.clone(),
                    exec_agent_status: container.agent_status(EXECUTE_COMMAND_AGENT),
                })
            })
            .collect();
        Some(TaskView {
            task_arn,
            last_status: task.last_status.clone(),
            enable_execute_command: task.enable_execute_command,
            containers,
        })
    }

    fn is_running(&self) -> bool {
        self.last_status.as_deref() == Some(RUNNING)
    }

    /// The task id: the last `/`-separated part of the ARN (the ARN itself if it has none).
    pub fn task_id(&self) -> &str {
        task_id_of(&self.task_arn)
    }
}

/// The task id in a task ARN or id: `arn:aws:ecs:r:a:task/cluster/ID` and `ID` both give `ID`.
pub fn task_id_of(task: &str) -> &str {
    task.rsplit('/').next().unwrap_or(task)
}

/// Picks the session target among `tasks` (in preference order).
///
/// The task must be RUNNING. With `container`, that container must exist in it and its
/// ExecuteCommandAgent must be RUNNING; without, the first container whose agent is RUNNING is
/// taken. A container name that no running task has is [`EcsError::ContainerNotFound`] (with the
/// names that do exist); anything else that fits nothing is [`EcsError::NoTaskWithAgent`], whose
/// summary says, per task, what was missing.
pub fn select_target(
    cluster: &str,
    tasks: &[TaskView],
    container: Option<&str>,
) -> Result<Target, EcsError> {
    let running: Vec<&TaskView> = tasks.iter().filter(|task| task.is_running()).collect();
    for task in &running {
        let candidate = match container {
            Some(wanted) => task.containers.iter().find(|c| c.name == wanted),
            None => task.containers.iter().find(|c| c.agent_running()),
        };
        if let Some(found) = candidate.filter(|c| c.agent_running()) {
            return Ok(Target {
                cluster_name: cluster.to_owned(),
                task_id: task.task_id().to_owned(),
                task_arn: task.task_arn.clone(),
                container_name: found.name.clone(),
                runtime_id: found.runtime_id.clone(),
            });
        }
    }
    if let (Some(wanted), Some(first)) = (container, running.first())
        && !running
            .iter()
            .any(|task| task.containers.iter().any(|c| c.name == wanted))
    {
        return Err(EcsError::ContainerNotFound {
            container: wanted.to_owned(),
            task_id: first.task_id().to_owned(),
            available: first.containers.iter().map(|c| c.name.clone()).collect(),
        });
    }
    Err(EcsError::NoTaskWithAgent {
        cluster: cluster.to_owned(),
        summary: summarize(tasks, container),
    })
}

/// One short clause per task saying why it did not fit, then a count of the rest.
fn summarize(tasks: &[TaskView], container: Option<&str>) -> String {
    if tasks.is_empty() {
        return "no tasks described".to_owned();
    }
    let mut clauses: Vec<String> = tasks
        .iter()
        .take(SUMMARY_TASKS)
        .map(|task| {
            let status = task.last_status.as_deref().unwrap_or("UNKNOWN");
            let agents: Vec<String> = task
                .containers
                .iter()
                .filter(|c| container.is_none_or(|wanted| c.name == wanted))
                .map(|c| {
                    format!(
                        "{} agent {}",
                        c.name,
                        c.exec_agent_status.as_deref().unwrap_or("absent")
                    )
                })
                .collect();
            let agents = if agents.is_empty() {
                "no containers".to_owned()
            } else {
                agents.join(", ")
            };
            format!(
                "task {} {status}, enableExecuteCommand={}, {agents}",
                task.task_id(),
                task.enable_execute_command
            )
        })
        .collect();
    if tasks.len() > SUMMARY_TASKS {
        clauses.push(format!("{} more", tasks.len() - SUMMARY_TASKS));
    }
    clauses.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, agent: Option<&str>) -> ContainerView {
        ContainerView {
            name: name.to_owned(),
            runtime_id: Some(format!("{name}-rt")),
            exec_agent_status: agent.map(str::to_owned),
        }
    }

    fn task(id: &str, status: &str, containers: Vec<ContainerView>) -> TaskView {
        TaskView {
            task_arn: format!("arn:aws:ecs:us-east-1:123456789012:task/prod/{id}"),
            last_status: Some(status.to_owned()),
            enable_execute_command: true,
            containers,
        }
    }

    #[test]
    fn picks_first_running_task_and_first_container_with_running_agent() {
        let tasks = [
            task("t1", "PENDING", vec![container("app", Some("RUNNING"))]),
            task(
                "t2",
                "RUNNING",
                vec![
                    container("sidecar", Some("PENDING")),
                    container("app", Some("RUNNING")),
                ],
            ),
            task("t3", "RUNNING", vec![container("app", Some("RUNNING"))]),
        ];
        let target = select_target("prod", &tasks, None).unwrap();
        assert_eq!(target.task_id, "t2");
        assert_eq!(target.container_name, "app");
        assert_eq!(target.runtime_id.as_deref(), Some("app-rt"));
        assert_eq!(target.cluster_name, "prod");
        assert!(target.task_arn.ends_with("/prod/t2"));
    }

    #[test]
    fn named_container_must_have_a_running_agent() {
        let tasks = [
            task(
                "t1",
                "RUNNING",
                vec![
                    container("app", Some("RUNNING")),
                    container("worker", Some("STOPPED")),
                ],
            ),
            task(
                "t2",
                "RUNNING",
                vec![
                    container("app", Some("RUNNING")),
                    container("worker", Some("RUNNING")),
                ],
            ),
        ];
        let target = select_target("prod", &tasks, Some("worker")).unwrap();
        assert_eq!(target.task_id, "t2");
        assert_eq!(target.container_name, "worker");
    }

    #[test]
    fn unknown_container_lists_the_names() {
        let tasks = [task(
            "t1",
            "RUNNING",
            vec![container("app", Some("RUNNING")), container("nginx", None)],
        )];
        let err = select_target("prod", &tasks, Some("ap")).unwrap_err();
        match &err {
            EcsError::ContainerNotFound {
                available, task_id, ..
            } => {
                assert_eq!(available, &["app", "nginx"]);
                assert_eq!(task_id, "t1");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("app, nginx"));
    }

    #[test]
    fn no_agent_anywhere_explains_each_task() {
        let mut disabled = task("t2", "RUNNING", vec![container("app", None)]);
        disabled.enable_execute_command = false;
        let tasks = [
            task("t1", "RUNNING", vec![container("app", Some("PENDING"))]),
            disabled,
        ];
        let err = select_target("prod", &tasks, None).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, EcsError::NoTaskWithAgent { .. }));
        assert!(
            text.contains("task t1 RUNNING, enableExecuteCommand=true, app agent PENDING"),
            "{text}"
        );
        assert!(
            text.contains("task t2 RUNNING, enableExecuteCommand=false, app agent absent"),
            "{text}"
        );
        assert!(text.contains("enable-execute-command"), "{text}");
    }

    #[test]
    fn stopped_tasks_are_never_picked() {
        let tasks = [task(
            "t1",
            "STOPPED",
            vec![container("app", Some("RUNNING"))],
        )];
        let err = select_target("prod", &tasks, None).unwrap_err();
        assert!(err.to_string().contains("task t1 STOPPED"), "{err}");
        // A named container in a stopped task is not "not found": the task is the problem.
        let err = select_target("prod", &tasks, Some("other")).unwrap_err();
        assert!(matches!(err, EcsError::NoTaskWithAgent { .. }), "{err}");
    }

    #[test]
    fn summary_is_bounded() {
        let tasks: Vec<TaskView> = (0..10)
            .map(|i| {
                task(
                    &format!("t{i}"),
                    "RUNNING",
                    vec![container("app", Some("PENDING"))],
                )
            })
            .collect();
        let err = select_target("prod", &tasks, None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("7 more"), "{text}");
        assert!(!text.contains("task t5"), "{text}");
    }

    #[test]
    fn empty_input_is_no_task() {
        let err = select_target("prod", &[], None).unwrap_err();
        assert!(err.to_string().contains("no tasks described"));
    }

    #[test]
    fn task_id_of_arn_and_id() {
        assert_eq!(task_id_of("arn:aws:ecs:us-east-1:1:task/prod/abc"), "abc");
        assert_eq!(task_id_of("arn:aws:ecs:us-east-1:1:task/abc"), "abc");
        assert_eq!(task_id_of("abc"), "abc");
        assert_eq!(task_id_of(""), "");
    }

    #[test]
    fn view_from_a_described_task_reads_the_agent() {
        let wire: super::super::api::Task = serde_json::from_value(serde_json::json!({
            "taskArn": "arn:aws:ecs:us-east-1:1:task/prod/abc",
            "lastStatus": "RUNNING",
            "enableExecuteCommand": true,
            "containers": [
                {"name": "app", "runtimeId": "rt-1", "managedAgents": [
                    {"name": "ExecuteCommandAgent", "lastStatus": "RUNNING"}]},
                {"name": "nginx"},
                {"runtimeId": "nameless"}
            ]
        }))
        .unwrap();
        let view = TaskView::from_wire(&wire).unwrap();
        assert_eq!(view.task_id(), "abc");
        assert_eq!(view.containers.len(), 2);
        assert_eq!(
            view.containers[0].exec_agent_status.as_deref(),
            Some("RUNNING")
        );
        assert_eq!(view.containers[0].runtime_id.as_deref(), Some("rt-1"));
        assert_eq!(view.containers[1].exec_agent_status, None);
        assert!(TaskView::from_wire(&Default::default()).is_none());
    }
}
