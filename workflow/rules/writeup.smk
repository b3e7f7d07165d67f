# results/writeup.md: the CS336 assignment-1 writeup, every problem answered from the
# artifacts in the handout's order (lm writeup), with writeup.json listing each number's
# source. Two editions share the file, like results/README.md:
#   snakemake demo      -> the demo edition: the demo corpus and the demo-lr sweep stand in
#                          for TinyStories and the 17M runs (config writeup.demo); problems
#                          that need full-scale work point at their command, unread;
#   snakemake writeup   -> the full edition (also at the end of all and train_all): the roles
#                          of config writeup (tinystories, owt, learning_rate, ...).
# Inputs: the role artifacts the requested target builds, plus every other role artifact
# that exists when the job is planned. So the writeup reruns when any of them changes or a
# new one appears, and Snakemake keeps those up to date too (`snakemake -n writeup` shows
# what that would rerun); what does not exist yet is not built: the writeup gives its command.


include: "writeup_plan.smk"


rule writeup_report:
    """The CS336 writeup: each problem answered from the artifacts, in the handout's order."""
    input:
        writeup_inputs,
    output:
        md=report(
            "results/writeup.md",
            caption="../report/writeup.rst",
            category="Writeup",
            labels={"file": "writeup.md"},
        ),
        json="results/writeup.json",
    log:
        "results/logs/writeup.log",
    localrule: True
    conda:
        "../envs/lm.yaml"
    params:
        plan=lambda wc: as_json_arg(writeup_plan(writeup_edition())["plan"]),
        code=code_version("writeup"),
    shell:
        "lm writeup --plan {params.plan} --out {output.md:q} --json {output.json:q} "
        "2>&1 | tee {log:q}"


STAGE_TARGETS["writeup"] = lambda target, datasets: ["results/writeup.md"]
