"""All models, imported so that `Base.metadata` knows every table."""

from market.models.base import Base
from market.models.jobs import Job, JobStep
from market.models.users import PrivacySettings, Profile, User

__all__ = ["Base", "Job", "JobStep", "PrivacySettings", "Profile", "User"]
