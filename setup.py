"""Snowplow event manifest populator: a resumable Luigi pipeline around a PySpark job."""
from setuptools import find_packages, setup

setup(
    name="snowplow-manifest-populator",
    version="0.1.0",
    description="Back-fill Snowplow's DynamoDB event manifest from the enriched archive",
    packages=find_packages(include=["pipeline", "pipeline.*", "spark", "spark.*"]),
    package_data={"pipeline.configs": ["iglu_repo/schemas/*/*/*/*"]},
    include_package_data=True,
    python_requires=">=3.9",
    install_requires=[
        "luigi>=3.5,<4",
        "boto3>=1.28",
        "jsonschema>=4.17,<5",
        # The Spark line of current EMR 7 releases, so a local run is what runs on EMR.
        "pyspark>=3.5,<3.6",
        "pyyaml>=6",
    ],
    extras_require={
        "test": [
            # moto 5.2.6 checks S3 requests against API operation names (s3:ListObjectsV2) instead of IAM actions
            # (s3:ListBucket), which breaks the IAM-enforcing tests; 5.2.5 checks them as AWS does.
            "moto[server]>=5.0,<5.2.6",
            "pytest>=7",
            "pytest-xdist>=3",
            "hypothesis>=6",
            "ruff",
        ],
    },
)
