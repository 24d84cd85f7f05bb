"""Background jobs: list, follow one (state and progress), cancel."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from hitlseg.server.deps import ServerState, state

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


@router.get("", summary="Jobs of this server run, newest first")
def list_jobs(s: ServerState = Depends(state)):
    return {"jobs": [job.to_dict(result=False) for job in reversed(s.jobs.list())]}


@router.get("/{job_id}", summary="One job: state (queued, running, done, failed, cancelled), progress, result, error")
def get_job(job_id: str, s: ServerState = Depends(state)):
    return s.jobs.get(job_id).to_dict()


@router.post("/{job_id}/cancel", summary="Cancel a job (a running job stops at its next progress report)")
def cancel_job(job_id: str, s: ServerState = Depends(state)):
    return s.jobs.cancel(job_id).to_dict(result=False)
