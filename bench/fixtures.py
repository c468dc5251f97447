"""The request every benchmark times: a full CBC (differential in %, LOINC codes, a lab range), five
medicines of which three are linked to neutropenia, a condition, symptoms and a fever."""

FULL_CBC = {
    "patient": {"id": "bench", "sex": "female", "age_years": 54},
    "observations": [
        {"analyte": "wbc", "value": 2.1, "unit": "10*9/L", "reference_range": {"low": 3.5, "high": 11.0}},
        {"code": "770-8", "value": 34, "unit": "%"}, {"code": "736-9", "value": 50, "unit": "%"},
        {"code": "5905-5", "value": 12, "unit": "%"}, {"code": "713-8", "value": 3, "unit": "%"},
        {"code": "706-2", "value": 1, "unit": "%"}, {"analyte": "hemoglobin", "value": 11.2, "unit": "g/dL"},
        {"analyte": "platelets", "value": 140, "unit": "K/uL"},
    ],
    "medications": ["Bactrim DS 800/160 mg BID", "clozapine 100 mg", "Keflex 500mg", "metformin", "lisinopril"],
    "conditions": ["lupus"], "symptoms": ["fever", "sore throat"], "temperature_c": 38.6,
}
