"""The bodies of the CarData customer API as pydantic models, so the generated OpenAPI documents them.

Names and fields are BMW's published ones (`ContainerDto`, `VehicleMappingDto`, ...): a client written
against BMW's description reads ours unchanged. Every field has a default rather than `None`, as
BMW's schemas require none of them: an absent value is an empty string or list, never `null`, which
BMW's description does not allow. Our own additions (capabilities, reports, consents) are at the end.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_DESCRIPTORS = 500  # keys in one container: the catalogue has fewer; more is an attack, not a request
MAX_TEXT_CHARS = 256  # a container's name or purpose


# BMW's brands as VehicleDto lists them.
Brand = Literal["BMW", "BMWi", "BMW Motorrad", "Toyota-Supra", "MINI", "Rolls-Royce"]


class ContainerState(StrEnum):
    ACTIVE = "ACTIVE"
    DELETED = "DELETED"


class MappingType(StrEnum):
    PRIMARY = "PRIMARY"
    SECONDARY = "SECONDARY"


class CreateContainerRequest(BaseModel):
    """Container creation request payload: the catalogue keys (technical descriptors) a client asks for."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(default="", max_length=MAX_TEXT_CHARS)
    purpose: str = Field(default="", max_length=MAX_TEXT_CHARS)
    technicalDescriptors: list[str] = Field(  # noqa: N815 (BMW's field name)
        default_factory=list, max_length=MAX_DESCRIPTORS
    )


class ContainerDto(BaseModel):
    containerId: str = ""  # noqa: N815
    name: str = ""
    purpose: str = ""
    state: ContainerState = ContainerState.ACTIVE
    created: datetime


class ContainerDetailsDto(ContainerDto):
    technicalDescriptors: list[str] = Field(default_factory=list)  # noqa: N815


class ContainerListDto(BaseModel):
    containers: list[ContainerDto] = Field(default_factory=list)


class VehicleMappingDto(BaseModel):
    vin: str
    mappedSince: datetime  # noqa: N815
    mappingType: MappingType = MappingType.PRIMARY  # noqa: N815


class VehicleDto(BaseModel):
    """Basic data of one vehicle: what our backend knows of it; the rest empty."""

    vin: str
    brand: Brand = "BMW"
    isTelematicsCapable: bool = True  # noqa: N815
    puStep: str = ""  # noqa: N815
    modelRange: str = ""  # noqa: N815
    series: str = ""
    modelName: str = ""  # noqa: N815
    modelKey: str = ""  # noqa: N815
    bodyType: str = ""  # noqa: N815
    numberOfDoors: int = 0  # noqa: N815
    hasNavi: bool = False  # noqa: N815
    headUnit: str = ""  # noqa: N815
    hasSunRoof: bool = False  # noqa: N815
    countryCodeISO: str = ""  # noqa: N815
    steering: str = ""
    engine: str = ""
    driveTrain: str = ""  # noqa: N815
    chargingModes: list[str] = Field(default_factory=list)  # noqa: N815
    propulsionType: str = ""  # noqa: N815
    colourCode: str = ""  # noqa: N815
    colourCodeRaw: str = ""  # noqa: N815
    constructionDate: str = ""  # noqa: N815
    fullSAList: str = ""  # noqa: N815
    hvsMaxEnergyAbsolute: str = ""  # noqa: N815
    simStatus: str = ""  # noqa: N815


class TelematicDataEntryDto(BaseModel):
    value: str = ""
    unit: str = ""
    timestamp: str = ""


class ExVeTelematicDataResponseDto(BaseModel):
    telematicData: dict[str, TelematicDataEntryDto] = Field(default_factory=dict)  # noqa: N815


# ---- ours: not in BMW's description -------------------------------------------------------------------


class CapabilityDto(BaseModel):
    """Whether one CarData key is available for this vehicle now, and how often at most."""

    key: str
    available: bool
    reason: str = ""
    minIntervalSeconds: float = 0.0  # noqa: N815


class CapabilitiesDto(BaseModel):
    vin: str
    timestamp: str = ""  # when it was computed: at the request, from the vehicle's state then
    capabilities: list[CapabilityDto] = Field(default_factory=list)


class ConsentGrantRequest(BaseModel):
    """The keys and/or categories the owner lets one client see."""

    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(min_length=1, max_length=MAX_DESCRIPTORS)


class ConsentDto(BaseModel):
    """One consent of the owner in force: which client may receive which keys of which vehicle."""

    vin: str
    clientId: str  # noqa: N815
    keys: list[str] = Field(default_factory=list)
