"""What is made of logits: saved scores, reports (top-1/top-5, per class, confusion matrices), late-fusion
ensembles, and finished runs read back (`ntu-train summary`). Pure numbers and pictures: nothing here
imports training, so training writes its evaluation through these."""
