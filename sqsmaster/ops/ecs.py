"""An ECS service's desired count, read and written through boto3 (for :mod:`sqsmaster.ops.scaling`).

Scale-in on ECS stops tasks with SIGTERM, then SIGKILL after the container's ``stopTimeout``
in the task definition (30 s unless set, at most 120 s). ``sqsmaster worker`` stops receiving
at SIGTERM, lets the running task finish within ``--grace`` and then releases its message
(visibility 0), so ``stopTimeout`` must be at least ``--grace`` + 15 s, or the worker is killed
before it has released (the message then comes back only when its visibility timeout ends).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from ..errors import ConfigurationError, SqsMasterError

logger = logging.getLogger(__name__)

#: ECS's error codes for a cluster or service that does not exist (or is not active).
MISSING_CODES = frozenset({"ClusterNotFoundException", "ServiceNotFoundException", "ServiceNotActiveException"})
#: Bounds on one ECS call (s): a scaler round must not hang on a partition; the next round retries.
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 10  # two attempts: a round ends within about 30 s on a partition


class ServiceError(SqsMasterError, ClientError):
    """An ECS call failed. Also a botocore ``ClientError`` (sqstaskmaster's ``except ClientError:`` catches it);
    ``code`` is ECS's error code, None when no answer came (the endpoint could not be reached)."""

    def __init__(self, message: str, *, code: str | None = None, operation: str = "unknown") -> None:
        Exception.__init__(self, message)
        self.code = code
        self.response = {"Error": {"Code": code or type(self).__name__, "Message": message}}
        self.operation_name = operation


class ServiceNotFound(ServiceError):
    """The ECS cluster or service does not exist (or the service is not active)."""


@dataclass(frozen=True)
class ServiceCounts:
    """What ECS says of a service: the count it aims for, and the tasks running and starting now."""

    desired: int
    running: int
    pending: int


def make_ecs_client(region: str | None = None) -> Any:
    """A boto3 ECS client with bounded calls; endpoint and credentials from the standard AWS configuration
    (``AWS_ENDPOINT_URL_ECS`` / ``AWS_ENDPOINT_URL`` are honoured), the region too unless ``region`` is given.
    Raises ConfigurationError when no region is configured anywhere."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    config = Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                    retries={"mode": "standard", "total_max_attempts": 2})
    try:
        return boto3.client("ecs", region_name=region, config=config)
    except NoRegionError:
        raise ConfigurationError("no AWS region for ECS: set AWS_DEFAULT_REGION (or AWS_REGION)") from None


class EcsService:
    """One ECS service (``cluster``, ``service``: names or ARNs) whose desired count a scaler sets.

    ``client``: a boto3 ECS client (default :func:`make_ecs_client` in ``region``, made on first use).
    Every method raises :class:`ServiceNotFound` for a missing cluster or service and
    :class:`ServiceError` for any other failure (``code`` None when ECS could not be reached).
    """

    def __init__(self, cluster: str, service: str, client: Any = None, *, region: str | None = None) -> None:
        if not cluster or not service:
            raise ConfigurationError(f"an ECS service is named CLUSTER/SERVICE, not {cluster}/{service}")
        self.cluster = cluster
        self.service = service
        self._client = client
        self._region = region

    @classmethod
    def from_path(cls, path: str, client: Any = None, *, region: str | None = None) -> "EcsService":
        """``CLUSTER/SERVICE`` (the command line's form; the cluster may be an ARN, which has a slash of its own).
        Raises ConfigurationError for anything else."""
        cluster, sep, service = path.rpartition("/")
        if not sep or not cluster or not service:
            raise ConfigurationError(f"--ecs takes CLUSTER/SERVICE, not {path!r}")
        return cls(cluster, service, client, region=region)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_ecs_client(self._region)
        return self._client

    @property
    def name(self) -> str:
        return f"{self.cluster}/{self.service}"

    def describe(self) -> dict[str, Any]:
        """DescribeServices for this service: its description (ECS reports a missing service as a
        failure, not an error: that is :class:`ServiceNotFound` here too)."""
        result = self._call("describe_services", cluster=self.cluster, services=[self.service])
        services = result.get("services") or []
        if not services or result.get("failures"):
            reasons = ", ".join(str(f.get("reason")) for f in result.get("failures") or []) or "no such service"
            raise ServiceNotFound(f"ECS service {self.name} not found ({reasons})", code="ServiceNotFoundException",
                                  operation="DescribeServices")
        if services[0].get("status") not in (None, "ACTIVE"):
            raise ServiceNotFound(f"ECS service {self.name} is {services[0].get('status')}, not ACTIVE",
                                  code="ServiceNotActiveException", operation="DescribeServices")
        return dict(services[0])

    def counts(self) -> ServiceCounts:
        """The service's desired, running and pending task counts, as ECS reports them now."""
        service = self.describe()
        return ServiceCounts(int(service.get("desiredCount", 0)), int(service.get("runningCount", 0)),
                             int(service.get("pendingCount", 0)))

    def set_desired(self, count: int, current: int | None = None) -> bool:
        """Make ``count`` the service's desired count; True when that took an UpdateService call.

        Describes the service first (unless ``current``, its desired count, was just read) and
        writes only when the count changes: an UpdateService that changes nothing still
        costs an API call against ECS's throttle and a line in the service's event log.
        A lower count makes ECS stop tasks with SIGTERM (see the module's docstring).
        """
        if current is None:
            current = self.counts().desired
        if count == current:
            logger.debug("ECS service %s: desired count %d unchanged", self.name, count)
            return False
        self._call("update_service", cluster=self.cluster, service=self.service, desiredCount=count)
        logger.info("ECS service %s: desired count %d -> %d", self.name, current, count)
        return True

    def _call(self, operation: str, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, NoCredentialsError, PartialCredentialsError

        wire = "".join(part.title() for part in operation.split("_"))
        try:
            return getattr(self.client, operation)(**params)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code") or "")
            error = ServiceNotFound if code in MISSING_CODES else ServiceError
            raise error(f"{wire} on ECS service {self.name} failed: {code or exc}", code=code or None,
                        operation=wire) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise ConfigurationError(f"no AWS credentials for ECS ({exc})") from exc
        except BotoCoreError as exc:  # no answer: connection refused, a timeout...
            raise ServiceError(f"{wire} on ECS service {self.name} failed: {exc}", operation=wire) from exc
