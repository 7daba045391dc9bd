"""All models, imported so that `Base.metadata` knows every table."""

from market.models.base import Base
from market.models.jobs import Job, JobStep
from market.models.notifications import Notification
from market.models.users import PrivacySettings, Profile, User

__all__ = ["Base", "Job", "JobStep", "Notification", "PrivacySettings", "Profile", "User"]
