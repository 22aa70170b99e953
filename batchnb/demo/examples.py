"""The worked examples of the Batch API 2.3, as batches against the demo Scheduling API.

``batchnb demo`` runs them; the tests and notebooks use them too.

    >>> chained().size
    3
"""

from __future__ import annotations

from .._refs import ref
from ..model import Batch, Operation

__all__ = ["API", "chained", "mixed", "nested", "three_services"]

#: the demo Scheduling API's prefix, which the examples' paths start with.
API = "/api/2.1/scheduling"


def chained(location: str = "My Location") -> Batch:
    """A location, a service there, and a staff member at it who offers the service.

    Later paths carry the created company's id through references.

    >>> [op.name for op in chained()]
    ['add-company', 'add-service', 'add-staff']
    """
    company = ref("add-company", "$.id")
    return Batch(
        [
            Operation("POST", f"{API}/companies", {"name": location}, name="add-company"),
            Operation(
                "POST",
                f"{API}/companies/{company}/services",
                {"name": "My Service", "duration": 45, "price": 30},
                name="add-service",
            ),
            Operation(
                "POST",
                f"{API}/companies/{company}/staff",
                {
                    "firstName": "John",
                    "lastName": "Doe",
                    "email": "john@example.com",
                    "services": [{"id": ref("add-service", "$.id")}],
                },
                name="add-staff",
            ),
        ]
    )


def three_services(company_id: str) -> Batch:
    """Three services added to one location in one call.

    >>> three_services("co_123").size
    3
    """
    path = f"{API}/companies/{company_id}/services"
    return Batch(
        [
            Operation("POST", path, {"name": "Haircut", "duration": 30, "price": 25}, name="haircut"),
            Operation("POST", path, {"name": "Colour", "duration": 90, "price": 80}, name="colour"),
            Operation("POST", path, {"name": "Shave", "duration": 15, "price": 12}, name="shave"),
        ]
    )


def mixed(company_id: str) -> Batch:
    """Reads and writes side by side; one of them fails (404) without stopping the rest.

    >>> sorted({op.method for op in mixed("co_123")})
    ['DELETE', 'GET', 'POST', 'PUT']
    """
    base = f"{API}/companies/{company_id}"
    return Batch(
        [
            Operation("GET", base, name="get-company"),
            Operation("PUT", base, {"name": "My Location (renamed)", "timezone": "Europe/Paris"}, name="rename"),
            Operation("POST", f"{base}/services", {"name": "Massage", "duration": 60, "price": 55}, name="add-massage"),
            Operation("GET", f"{base}/services", name="list-services"),
            Operation("GET", f"{API}/companies/co_000000000000", name="missing"),
            Operation("DELETE", f"{base}/services/{ref('add-massage', '$.id')}", name="remove-massage"),
        ]
    )


def nested(location: str = "Nested Location") -> Batch:
    """A location whose services and staff are nested under it: they run only if it is created.

    >>> (len(nested()), nested().size, nested().depth)
    (2, 5, 3)
    """
    company = ref("nest-company", "$.id")
    return Batch(
        [
            Operation(
                "POST",
                f"{API}/companies",
                {"name": location},
                name="nest-company",
                requests=[
                    Operation(
                        "POST",
                        f"{API}/companies/{company}/services",
                        {"name": "Manicure", "duration": 40},
                        name="nest-service",
                        requests=[
                            Operation(
                                "POST",
                                f"{API}/companies/{company}/staff",
                                {
                                    "firstName": "Ada",
                                    "lastName": "Lovelace",
                                    "services": [{"id": ref("nest-service", "$.id")}],
                                },
                                name="nest-staff",
                            ),
                        ],
                    ),
                ],
            ),
            Operation(
                "POST",
                f"{API}/companies",
                {"name": ""},
                name="bad-company",
                requests=[
                    Operation(
                        "POST",
                        f"{API}/companies/{ref('bad-company', '$.id')}/services",
                        {"name": "Never"},
                        name="never",
                    ),
                ],
            ),
        ]
    )
