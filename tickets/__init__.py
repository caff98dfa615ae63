"""Work orders (工单) and the shared case workflow (受理 立案 派遣 处置 核查 结案),
callbacks (回访), satisfaction surveys (满意度评价) and KPIs."""

# What follows a move is wired once, whichever of the room's modules is imported first.
from tickets import follow_ups as follow_ups
