"""Wire formats: the CRDs and AdmissionReview as pydantic models."""
